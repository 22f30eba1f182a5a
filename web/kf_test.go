package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/storage"
)

// fakeKF is the kf side of the adapter, set per test.
type fakeKF struct {
	accounts  map[string][]storage.KFAccount
	err       error
	customers map[string]adapter.KFCustomer // by user id
	asked     map[string][][]string         // the users of each lookup, by bot
}

var _ KF = (*fakeKF)(nil)

func (f *fakeKF) KFAccounts(_ context.Context, bot string) ([]storage.KFAccount, error) {
	return f.accounts[bot], f.err
}

func (f *fakeKF) KFCustomers(_ context.Context, bot string, users []string) map[string]adapter.KFCustomer {
	if f.asked == nil {
		f.asked = map[string][][]string{}
	}
	f.asked[bot] = append(f.asked[bot], users)
	out := map[string]adapter.KFCustomer{}
	for _, u := range users {
		if c, ok := f.customers[u]; ok {
			out[u] = c
		}
	}
	return out
}

const kfPullError = "kf: kf/sync_msg: errcode 60020: not allow to access from your ip"

// newKFPanelEnv is the panel with helpdesk answering kf accounts wkB and
// wkA (configured), of which wkA and wkC (called back) were pulled.
func newKFPanelEnv(t *testing.T) (*panelEnv, *fakeKF) {
	k := &fakeKF{accounts: map[string][]storage.KFAccount{"helpdesk": {
		{Bot: "helpdesk", OpenKfID: "wkA", LastPullAt: t0.Add(-time.Minute), LastError: kfPullError},
		{Bot: "helpdesk", OpenKfID: "wkC", LastPullAt: t0.Add(-2 * time.Minute)},
	}}}
	e := newPanelEnv(t, func(o *Options) { o.KF = k })
	e.bots[0].KF = &adapter.KFStatus{Accounts: []string{"wkB", "wkA"}}
	return e, k
}

// TestAPIBotsKF: an app with kf gains exactly "kf":{"accounts":[…]} with
// open_kfid, last_pull_at (null: never) and last_error (with its hint);
// an app without kf has no "kf" key.
func TestAPIBotsKF(t *testing.T) {
	e, k := newKFPanelEnv(t)
	auth := map[string]string{"Authorization": basic(adminUser, adminPW)}
	bots := func(rec *http.Response, body []byte) map[string]map[string]json.RawMessage {
		t.Helper()
		var out struct {
			Bots []map[string]json.RawMessage `json:"bots"`
		}
		if rec.StatusCode != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("GET /api/bots: %d %s", rec.StatusCode, body)
		}
		m := map[string]map[string]json.RawMessage{}
		for _, b := range out.Bots {
			var name string
			must(t, json.Unmarshal(b["name"], &name))
			m[name] = b
		}
		return m
	}
	get := func() map[string]map[string]json.RawMessage {
		rec := e.do(request{method: "GET", path: "/api/bots", header: auth})
		return bots(rec.Result(), rec.Body.Bytes())
	}
	kfOf := func(b map[string]json.RawMessage) any {
		var v any
		must(t, json.Unmarshal(b["kf"], &v))
		return v
	}
	account := func(id string, pulled any, lastError string) map[string]any {
		return map[string]any{"open_kfid": id, "last_pull_at": pulled, "last_error": lastError}
	}
	hint := kf.Hint(&kf.Error{Code: kf.CodeIPNotTrusted})
	want := map[string]any{"accounts": []any{
		account("wkA", "2026-03-02T02:29:00Z", kfPullError+" ("+hint+")"),
		account("wkB", nil, ""),
		account("wkC", "2026-03-02T02:28:00Z", ""),
	}}
	got := get()
	if v := kfOf(got["helpdesk"]); !reflect.DeepEqual(v, want) {
		t.Errorf("helpdesk kf = %v\nwant %v", v, want)
	}
	if _, ok := got["sales"]["kf"]; ok {
		t.Errorf("an app without kf has a kf key: %s", got["sales"]["kf"])
	}
	// The refresh answers the same entry.
	rec := e.do(request{method: "POST", path: "/api/bots/helpdesk/token/refresh", header: auth})
	var refreshed map[string]json.RawMessage
	must(t, json.Unmarshal(rec.Body.Bytes(), &refreshed))
	if v := kfOf(refreshed); !reflect.DeepEqual(v, want) {
		t.Errorf("refresh: kf = %v", v)
	}

	// The database down: the configured accounts, never pulled as far as
	// the API can tell; the list still answers.
	k.err = errors.New("database is locked")
	want = map[string]any{"accounts": []any{account("wkA", nil, ""), account("wkB", nil, "")}}
	if v := kfOf(get()["helpdesk"]); !reflect.DeepEqual(v, want) {
		t.Errorf("database down: kf = %v\nwant %v", v, want)
	}
	// kf enabled for every account, none called back yet: an empty list.
	k.err, k.accounts = nil, nil
	e.bots[0].KF.Accounts = nil
	if v := kfOf(get()["helpdesk"]); !reflect.DeepEqual(v, map[string]any{"accounts": []any{}}) {
		t.Errorf("no account yet: kf = %v", v)
	}
}

// TestDashboardKF: the card of an app with kf lists its accounts with the
// last pull, today's messages (Shanghai's midnight; events and the history
// of a first pull do not count) and the last error with its hint.
func TestDashboardKF(t *testing.T) {
	e, _ := newKFPanelEnv(t)
	ctx := t.Context()
	_, err := e.db.StartKFAccount(ctx, "helpdesk", "wkA")
	must(t, err)
	msg := func(key, user, msgType string, sent time.Time) storage.Message {
		return storage.Message{DedupeKey: key, UserID: user, MsgType: msgType, CreateTime: sent.Unix(), State: storage.MessageIgnored}
	}
	_, err = e.db.StoreKFPage(ctx, "helpdesk", "wkA", "c1", []storage.Message{
		msg("1", "kf:wkA:wmC1", "text", t0.Add(-time.Hour)),
		msg("2", "kf:wkA:wmC2", "text", t0.Add(-10*time.Hour)), // 00:30 in Shanghai
		msg("3", "kf:wkA:wmC2", "event", t0),
		msg("4", "kf:wkA:wmC3", "text", t0.Add(-11*time.Hour)), // 23:30 yesterday in Shanghai
	})
	must(t, err)
	s := e.login()
	rec := e.get("/admin/", s)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	card := body[strings.Index(body, `id="kf-helpdesk"`):]
	card = card[:strings.Index(card, "</div>")]
	for _, want := range []string{
		`data-open-kfid="wkA"`, `<dd class="last-pull">2026-03-02 10:29:00</dd>`, `<dd class="kf-today">2</dd>`,
		`<span class="last-error">` + kfPullError + `</span>`, "add it to the app&#39;s trusted IPs.",
		`data-open-kfid="wkB"`, `<dd class="last-pull">—</dd>`, `data-open-kfid="wkC"`, "WeChat customer service",
	} {
		if !strings.Contains(card, want) {
			t.Errorf("the kf part of the card lacks %q:\n%s", want, card)
		}
	}
	if n := strings.Count(card, `<dd class="kf-today">0</dd>`); n != 2 {
		t.Errorf("%d accounts with no message today, want 2 (wkB, wkC)", n)
	}
	if n := strings.Count(body, `class="kf"`); n != 1 {
		t.Errorf("%d cards with kf accounts, want 1 (sales has no kf)", n)
	}
	zh := e.do(request{method: "GET", path: "/admin/", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	wantBody(t, zh, "<h4>微信客服</h4>", "<dt>最近拉取</dt>", "<dt>今日消息</dt>", "<dt>客服账号</dt>")
}

// TestMessagesKF: kf customers are named (one lookup per bot and page,
// kf users only); one the adapter cannot name shows as its id; a message
// left to a person, one withdrawn and an answer WeCom could not deliver
// read as such, with the fail_type explained.
func TestMessagesKF(t *testing.T) {
	e, k := newKFPanelEnv(t)
	named, unnamed := "kf:wkA:wmNAMED", "kf:wkA:wmUNNAMED"
	k.customers = map[string]adapter.KFCustomer{named: {OpenKfID: "wkA", ExternalUserID: "wmNAMED", Nickname: "张三"}}
	ctx := t.Context()
	_, err := e.db.StartKFAccount(ctx, "helpdesk", "wkA")
	must(t, err)
	msg := func(key, user, content, state, reason string) storage.Message {
		return storage.Message{DedupeKey: key, UserID: user, MsgType: "text", Content: content, CreateTime: t0.Unix(), State: state, Error: reason}
	}
	_, err = e.db.StoreKFPage(ctx, "helpdesk", "wkA", "c1", []storage.Message{
		msg("k1", named, "a person has me", storage.MessageIgnored, "handled by a person"),
		msg("k2", named, "never mind", storage.MessageIgnored, "withdrawn by the customer"),
		msg("k3", unnamed, "refused", storage.MessageFailed, "WeCom could not deliver it (fail_type 10): the customer refuses messages"),
	})
	must(t, err)
	e.seed()
	s := e.login()
	rec := e.get("/admin/messages", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec,
		`<span class="badge kf">WeChat customer</span><span class="nickname">张三</span> <span class="muted kf-account">via wkA</span>`,
		`">`+unnamed+`</a>`, ">zhangsan</a>",
		"Handled by a person", "A receptionist has this customer&#39;s conversation",
		"Withdrawn by the customer", "WeCom could not deliver the answer",
		"The customer refuses messages from this account (fail_type 10): nothing more is sent to them until they write again.", "fail_type 10: the customer refuses messages",
	)
	if got := k.asked["helpdesk"]; len(got) != 1 || !slices.Equal(got[0], []string{unnamed, named}) {
		t.Errorf("lookups = %q, want one of the two kf users", got)
	}
	zh := e.do(request{method: "GET", path: "/admin/messages", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	wantBody(t, zh, "微信客户", "经客服账号 wkA", "已由人工接待", "客户已撤回", "企业微信未能送达回答", "客户拒收该客服账号的消息（fail_type 10）：在客户再次发消息之前不再向其发送。")

	rec = e.get("/admin/conversations", s)
	wantBody(t, rec, `<span class="nickname">张三</span>`, ">"+unnamed+"</a>", ">lisi</a>")
	rec = e.get(conversationURL("helpdesk", named), s)
	wantBody(t, rec, `<h1><span class="badge kf">WeChat customer</span><span class="nickname">张三</span>`,
		`<li class="turn turn-assistant muted ignored"`, ">Handled by a person</li>", ">Withdrawn by the customer</li>")
}

// TestKFCustomersInPanel: against the simulator, the customers' nicknames
// come from kf/customer/batchget, once for several pages; a failed lookup
// leaves the id and the page whole; GET /api/bots shows the account's pull
// and no secret.
func TestKFCustomersInPanel(t *testing.T) {
	e := newBrowserEnv(t)
	e.sim.SetKFNickname("wmZHAO", "赵六")
	e.kfWrites("wmZHAO", "你好")
	jar, err := cookiejar.New(nil)
	must(t, err)
	hc := &http.Client{Jar: jar}
	resp, err := hc.PostForm(e.url+"/admin/login", url.Values{"username": {adminUser}, "password": {adminPW}})
	must(t, err)
	resp.Body.Close()
	get := func(path string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", e.url+path, nil)
		must(t, err)
		req.Header.Set("Accept-Language", "en")
		resp, err := hc.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	calls := func(want int) {
		t.Helper()
		if n := e.sim.KFBatchGetCalls(); n != want {
			t.Fatalf("kf/customer/batchget calls = %d, want %d", n, want)
		}
	}
	zhao, qian := "kf:"+browserKF+":wmZHAO", "kf:"+browserKF+":wmQIAN"
	for _, p := range []string{"/admin/conversations", "/admin/messages", conversationURL("helpdesk", zhao)} {
		if body := get(p); !strings.Contains(body, `<span class="nickname">赵六</span>`) || !strings.Contains(body, "via "+browserKF) {
			t.Errorf("%s does not name the customer:\n%s", p, body)
		}
	}
	calls(1)

	// A new customer while WeCom fails: the id, the page, and the name
	// known before.
	e.kfWrites("wmQIAN", "在吗")
	e.sim.FailNext(wecomsim.APIKFBatchGet, kf.CodeSystemBusy, "system busy", 1)
	for range 2 { // the second render does not call again
		body := get("/admin/messages")
		if !strings.Contains(body, ">"+qian+"</a>") || !strings.Contains(body, `<span class="nickname">赵六</span>`) {
			t.Errorf("after a failed lookup:\n%s", body)
		}
	}
	calls(1)

	eventually.True(t, func() bool {
		a, err := e.app.KFAccounts(t.Context(), "helpdesk")
		return err == nil && len(a) == 1 && !a[0].LastPullAt.IsZero()
	}, "the pull to be recorded")
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.url+"/api/bots", nil)
	must(t, err)
	req.SetBasicAuth(adminUser, adminPW)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	var out struct {
		Bots []struct {
			Name string `json:"name"`
			KF   *struct {
				Accounts []map[string]any `json:"accounts"`
			} `json:"kf"`
		} `json:"bots"`
	}
	must(t, json.Unmarshal(body, &out))
	for _, b := range out.Bots {
		switch {
		case b.Name == "helpdesk" && (b.KF == nil || len(b.KF.Accounts) != 1 || b.KF.Accounts[0]["open_kfid"] != browserKF ||
			b.KF.Accounts[0]["last_pull_at"] == nil || b.KF.Accounts[0]["last_error"] != ""):
			t.Errorf("helpdesk: %s", body)
		case b.Name == browserAIBot && b.KF != nil:
			t.Errorf("the AI bot has kf: %s", body)
		}
	}
	for _, secret := range []string{browserSecret, browserToken, e.sim.CurrentToken(browserAgent), adminPW} {
		if secret != "" && strings.Contains(string(body), secret) {
			t.Errorf("GET /api/bots shows a secret %q", secret)
		}
	}
}
