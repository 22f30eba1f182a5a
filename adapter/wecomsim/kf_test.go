package wecomsim

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

const (
	kfAccountA = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
	kfAccountB = "wkBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB" // belongs to the other app
	kfCust     = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"
)

// kfNews is a decrypted kf_msg_or_event callback as the service sees it.
type kfNews struct {
	ToUserName string `xml:"ToUserName"`
	MsgType    string `xml:"MsgType"`
	Event      string `xml:"Event"`
	Token      string `xml:"Token"`
	OpenKfID   string `xml:"OpenKfId"`
	From       string `xml:"FromUserName"`
	MsgID      string `xml:"MsgId"`
}

// kfReceiver is the service's app callback, written with silenceper's
// helpers: it checks the signature, opens the message with the CorpID as
// receive id and records it.
type kfReceiver struct {
	key  string
	mu   sync.Mutex
	news []kfNews
}

func (rc *kfReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	var env struct {
		Encrypt string `xml:"Encrypt"`
	}
	if xml.Unmarshal(body, &env) != nil ||
		util.Signature(cbToken, q.Get("timestamp"), q.Get("nonce"), env.Encrypt) != q.Get("msg_signature") {
		http.Error(w, "bad callback", http.StatusForbidden)
		return
	}
	_, plain, err := util.DecryptMsg(corpID, env.Encrypt, rc.key)
	var n kfNews
	if err != nil || xml.Unmarshal(plain, &n) != nil {
		http.Error(w, "cannot open", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.news = append(rc.news, n)
	rc.mu.Unlock()
}

func (rc *kfReceiver) all() []kfNews {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]kfNews(nil), rc.news...)
}

type kfFixture struct {
	*fixture
	rc  *kfReceiver
	tok string
}

func newKFFixture(t *testing.T) *kfFixture {
	t.Helper()
	f := newFixture(t, func(o *Options) {
		o.KFAccounts = []KFAccount{{OpenKfID: kfAccountA, AgentID: agentID, Name: "客服A"},
			{OpenKfID: kfAccountB, AgentID: 1000003}}
	})
	rc := &kfReceiver{key: NewEncodingAESKey()}
	svc := httptest.NewServer(rc)
	t.Cleanup(svc.Close)
	f.sim.SetKFCallback(agentID, &Callback{URL: svc.URL + "/wecom/helpdesk/callback", Token: cbToken,
		EncodingAESKey: rc.key, CorpID: corpID, Now: f.clock.Now})
	return &kfFixture{fixture: f, rc: rc, tok: f.token(t)}
}

// kfPage is a sync_msg answer.
type kfPage struct {
	ErrCode    int              `json:"errcode"`
	ErrMsg     string           `json:"errmsg"`
	NextCursor *string          `json:"next_cursor"`
	HasMore    int              `json:"has_more"`
	MsgList    []map[string]any `json:"msg_list"`
	MsgID      string           `json:"msgid"`
	Customers  []map[string]any `json:"customer_list"`
	Invalid    []string         `json:"invalid_external_userid"`
}

func (f *kfFixture) call(t *testing.T, api, token string, body any) kfPage {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := body.(string); ok {
		b = []byte(s)
	}
	status, raw := f.roundTrip(t, http.MethodPost, "/cgi-bin/"+api+"?access_token="+url.QueryEscape(token), string(b))
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d", api, status)
	}
	var p kfPage
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("%s: %q: %v", api, raw, err)
	}
	return p
}

func (f *kfFixture) sync(t *testing.T, cursor, token string, limit int) kfPage {
	t.Helper()
	return f.call(t, APIKFSyncMsg, f.tok, map[string]any{"cursor": cursor, "token": token, "limit": limit, "open_kfid": kfAccountA})
}

func (f *kfFixture) sendText(t *testing.T, msgID, content string) kfPage {
	t.Helper()
	req := map[string]any{"touser": kfCust, "open_kfid": kfAccountA, "msgtype": "text", "text": map[string]any{"content": content}}
	if msgID != "" {
		req["msgid"] = msgID
	}
	return f.call(t, APIKFSendMsg, f.tok, req)
}

func (f *kfFixture) writes(t *testing.T, text string) string {
	t.Helper()
	id, err := f.sim.KFCustomerWrites(context.Background(), kfAccountA, kfCust, text)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func cursorOf(t *testing.T, p kfPage) string {
	t.Helper()
	if p.NextCursor == nil || *p.NextCursor == "" {
		t.Fatalf("page without next_cursor: %+v", p)
	}
	return *p.NextCursor
}

// TestKFCallbackAndPull: a customer's text is announced to the app callback
// (CorpID receive id, Token and OpenKfId, no FromUserName or MsgId) and
// comes back from sync_msg with that Token; the next pull from the new
// cursor is empty.
func TestKFCallbackAndPull(t *testing.T) {
	f := newKFFixture(t)
	id := f.writes(t, "你好")
	news := f.rc.all()
	if len(news) != 1 {
		t.Fatalf("%d callbacks", len(news))
	}
	n := news[0]
	if n.ToUserName != corpID || n.MsgType != "event" || n.Event != "kf_msg_or_event" || n.OpenKfID != kfAccountA ||
		n.Token == "" || n.Token != f.sim.KFLastToken(kfAccountA) || n.From != "" || n.MsgID != "" {
		t.Fatalf("callback = %+v", n)
	}
	p := f.sync(t, "", n.Token, 0)
	if p.ErrCode != 0 || p.HasMore != 0 || len(p.MsgList) != 1 {
		t.Fatalf("sync_msg = %+v", p)
	}
	m := p.MsgList[0]
	if m["msgid"] != id || m["origin"] != float64(3) || m["msgtype"] != "text" || m["external_userid"] != kfCust ||
		m["open_kfid"] != kfAccountA || m["text"].(map[string]any)["content"] != "你好" {
		t.Errorf("message = %v", m)
	}
	again := f.sync(t, cursorOf(t, p), n.Token, 0)
	if again.ErrCode != 0 || len(again.MsgList) != 0 || again.HasMore != 0 {
		t.Errorf("second pull = %+v", again)
	}
	if got := f.sim.KFSyncCalls(kfAccountA); got != 2 {
		t.Errorf("KFSyncCalls = %d", got)
	}
}

// TestKFPaging: pages of at most limit with has_more, opaque cursors, the
// injected empty page with has_more=1, a page without next_cursor, an
// unknown cursor, and the 3-day history.
func TestKFPaging(t *testing.T) {
	f := newKFFixture(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, f.writes(t, "m"+string(rune('0'+i))))
		f.clock.Advance(time.Second)
	}
	var got []string
	cursor := ""
	f.sim.KFEmptyPagesNext(1)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("no end of pages")
		}
		p := f.sync(t, cursor, "", 2)
		if p.ErrCode != 0 || len(p.MsgList) > 2 {
			t.Fatalf("page %d: %+v", pages, p)
		}
		if pages == 0 && (len(p.MsgList) != 0 || p.HasMore != 1) {
			t.Fatalf("injected empty page: %+v", p)
		}
		for _, m := range p.MsgList {
			got = append(got, m["msgid"].(string))
		}
		cursor = cursorOf(t, p)
		if p.HasMore == 0 {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("pulled %v, want %v", got, ids)
	}

	f.sim.KFNoCursorNext(1)
	if p := f.sync(t, "", "", 0); p.NextCursor != nil || len(p.MsgList) != 5 {
		t.Errorf("page without cursor: %+v", p)
	}
	if p := f.sync(t, "not-a-cursor", "", 0); p.ErrCode != KFErrBadParam {
		t.Errorf("unknown cursor: errcode %d", p.ErrCode)
	}

	// 3 days later only the newer message is readable, with or without
	// the old cursor.
	f.clock.Advance(KFHistory - 3*time.Second)
	newest := f.writes(t, "later")
	f.clock.Advance(3 * time.Second)
	f.tok = f.token(t) // the access token has long expired
	for _, c := range []string{"", cursor} {
		p := f.sync(t, c, "", 0)
		if p.ErrCode != 0 || len(p.MsgList) != 1 || p.MsgList[0]["msgid"] != newest {
			t.Errorf("cursor %q after 3 days: %+v", c, p)
		}
	}
}

// TestKFSyncRefusals: the callback Token lives 10 minutes (95007), the
// account must belong to the token's app (95000), access tokens are checked
// like every API's.
func TestKFSyncRefusals(t *testing.T) {
	f := newKFFixture(t)
	f.writes(t, "hi")
	msgToken := f.sim.KFLastToken(kfAccountA)
	f.clock.Advance(KFTokenLifetime - time.Second)
	if p := f.sync(t, "", msgToken, 0); p.ErrCode != 0 {
		t.Fatalf("token at 9:59: %+v", p)
	}
	f.clock.Advance(time.Second)
	if p := f.sync(t, "", msgToken, 0); p.ErrCode != KFErrInvalidMsgToken {
		t.Errorf("token at 10:00: errcode %d, want 95007", p.ErrCode)
	}
	if p := f.sync(t, "", "", 0); p.ErrCode != 0 || len(p.MsgList) != 1 {
		t.Errorf("without token: %+v", p)
	}
	if p := f.sync(t, "", "ENCmadeup", 0); p.ErrCode != KFErrInvalidMsgToken {
		t.Errorf("unknown token: errcode %d", p.ErrCode)
	}
	for name, tc := range map[string]struct {
		token string
		body  any
		want  int
	}{
		"other app's account": {f.tok, map[string]any{"open_kfid": kfAccountB}, KFErrInvalidOpenKfID},
		"no open_kfid":        {f.tok, map[string]any{}, KFErrInvalidOpenKfID},
		"not json":            {f.tok, `{"open_kfid":`, KFErrBadParam},
		"no access token":     {"", map[string]any{"open_kfid": kfAccountA}, 41001},
		"bad access token":    {"nope", map[string]any{"open_kfid": kfAccountA}, 40014},
	} {
		if p := f.call(t, APIKFSyncMsg, tc.token, tc.body); p.ErrCode != tc.want {
			t.Errorf("%s: errcode %d, want %d", name, p.ErrCode, tc.want)
		}
	}
	f.clock.Advance(3 * time.Hour)
	if p := f.sync(t, "", "", 0); p.ErrCode != 42001 {
		t.Errorf("expired access token: errcode %d, want 42001", p.ErrCode)
	}
}

// TestKFSendBudget: 5 sends per customer message (95001 for the 6th), reset
// when the customer writes; msgids unique per account (95033, even once the
// budget is used up); the 48 h window (95002); a person's conversation
// (95018).
func TestKFSendBudget(t *testing.T) {
	f := newKFFixture(t)
	if p := f.sendText(t, "", "hi"); p.ErrCode != KFErrInvalidCustomer {
		t.Fatalf("unknown customer: errcode %d", p.ErrCode)
	}
	f.writes(t, "问题")
	if got := f.sim.KFState(kfAccountA, kfCust); got != KFStateNew {
		t.Fatalf("state after writing = %d", got)
	}
	for i := range KFMaxParts {
		if p := f.sendText(t, "part"+string(rune('0'+i)), "答"); p.ErrCode != 0 || p.MsgID != "part"+string(rune('0'+i)) {
			t.Fatalf("send %d: %+v", i, p)
		}
	}
	if got := f.sim.KFState(kfAccountA, kfCust); got != KFStateAssistant {
		t.Errorf("state after answering = %d", got)
	}
	if p := f.sendText(t, "part5", "答"); p.ErrCode != KFErrOverLimit {
		t.Errorf("6th send: errcode %d, want 95001", p.ErrCode)
	}
	if p := f.sendText(t, "part4", "答"); p.ErrCode != KFErrDuplicateMsgID {
		t.Errorf("re-sent part: errcode %d, want 95033", p.ErrCode)
	}
	if got := f.sim.KFReceived(kfAccountA, kfCust); len(got) != KFMaxParts || got[0].MsgID != "part0" || got[0].Content != "答" {
		t.Fatalf("received %+v", got)
	}

	f.writes(t, "再问")
	if p := f.sendText(t, "", "答"); p.ErrCode != 0 || p.MsgID == "" {
		t.Errorf("after the customer wrote again: %+v", p)
	}
	if p := f.sendText(t, "part0", "答"); p.ErrCode != KFErrDuplicateMsgID {
		t.Errorf("msgid reused later: errcode %d", p.ErrCode)
	}
	for name, tc := range map[string]struct {
		msgID, content string
		want           int
	}{
		"empty":       {"", "", KFErrEmptyContent},
		"2049 bytes":  {"", strings.Repeat("好", 683), KFErrContentTooLong},
		"long msgid":  {strings.Repeat("a", 33), "x", KFErrBadParam},
		"msgid chars": {"a.b", "x", KFErrBadParam},
	} {
		if p := f.sendText(t, tc.msgID, tc.content); p.ErrCode != tc.want {
			t.Errorf("%s: errcode %d, want %d", name, p.ErrCode, tc.want)
		}
	}
	if p := f.sendText(t, "", strings.Repeat("好", 682)+"ab"); p.ErrCode != 0 {
		t.Errorf("2048 bytes: %+v", p)
	}

	f.clock.Advance(KFReplyWindow)
	f.tok = f.token(t) // the old access token has expired meanwhile
	if p := f.sendText(t, "", "答"); p.ErrCode != KFErrOutsideWindow {
		t.Errorf("after 48 h: errcode %d, want 95002", p.ErrCode)
	}

	f.writes(t, "人工")
	if _, err := f.sim.KFHandOver(context.Background(), kfAccountA, kfCust, "zhangsan"); err != nil {
		t.Fatal(err)
	}
	if p := f.sendText(t, "", "答"); p.ErrCode != KFErrSessionNotOurs {
		t.Errorf("handed over: errcode %d, want 95018", p.ErrCode)
	}
	if p := f.call(t, APIKFSendMsg, f.tok, map[string]any{"touser": kfCust, "open_kfid": kfAccountB,
		"msgtype": "text", "text": map[string]any{"content": "x"}}); p.ErrCode != KFErrInvalidOpenKfID {
		t.Errorf("other app's account: errcode %d", p.ErrCode)
	}
}

// TestKFWelcome: enter_session carries a welcome_code that answers one
// send_msg_on_event within 20 s; no code for a customer welcomed or writing
// in the last 48 h.
func TestKFWelcome(t *testing.T) {
	f := newKFFixture(t)
	ctx := context.Background()
	code, err := f.sim.KFCustomerEnters(ctx, kfAccountA, kfCust, "12345", "from-site")
	if err != nil || code == "" {
		t.Fatalf("KFCustomerEnters = %q, %v", code, err)
	}
	p := f.sync(t, "", f.sim.KFLastToken(kfAccountA), 0)
	if len(p.MsgList) != 1 {
		t.Fatalf("sync = %+v", p)
	}
	ev, _ := p.MsgList[0]["event"].(map[string]any)
	if p.MsgList[0]["origin"] != float64(4) || ev["event_type"] != "enter_session" || ev["welcome_code"] != code ||
		ev["scene"] != "12345" || ev["external_userid"] != kfCust || len(p.MsgList[0]["msgid"].(string)) != 44 {
		t.Fatalf("event = %v", p.MsgList[0])
	}
	welcome := map[string]any{"code": code, "msgtype": "text", "text": map[string]any{"content": "欢迎光临"}}
	f.clock.Advance(KFWelcomeLifetime - time.Second)
	if r := f.call(t, APIKFSendMsgOnEvent, f.tok, welcome); r.ErrCode != 0 || r.MsgID == "" {
		t.Fatalf("welcome: %+v", r)
	}
	if r := f.call(t, APIKFSendMsgOnEvent, f.tok, welcome); r.ErrCode != KFErrBadParam {
		t.Errorf("second use: errcode %d", r.ErrCode)
	}
	got := f.sim.KFReceived(kfAccountA, kfCust)
	if len(got) != 1 || !got[0].OnEvent || got[0].Content != "欢迎光临" || got[0].Code != code {
		t.Fatalf("received %+v", got)
	}
	if again, _ := f.sim.KFCustomerEnters(ctx, kfAccountA, kfCust, "", ""); again != "" {
		t.Error("a welcome_code again within 48 h of the last welcome")
	}

	other := "wmOTHER"
	f.sim.KFCustomerWrites(ctx, kfAccountA, other, "先说话")
	if c, _ := f.sim.KFCustomerEnters(ctx, kfAccountA, other, "", ""); c != "" {
		t.Error("a welcome_code for a customer who wrote within 48 h")
	}
	third := "wmTHIRD"
	late, _ := f.sim.KFCustomerEnters(ctx, kfAccountA, third, "", "")
	f.clock.Advance(KFWelcomeLifetime)
	welcome["code"] = late
	if r := f.call(t, APIKFSendMsgOnEvent, f.tok, welcome); r.ErrCode != KFErrBadParam {
		t.Errorf("code after 20 s: errcode %d", r.ErrCode)
	}
	welcome["code"] = "made-up"
	if r := f.call(t, APIKFSendMsgOnEvent, f.tok, welcome); r.ErrCode != KFErrBadParam {
		t.Errorf("unknown code: errcode %d", r.ErrCode)
	}
}

// TestKFOtherOrigins: a receptionist's text (origin 5), a recall and a
// hand-over come out of sync_msg in order, with their fields.
func TestKFOtherOrigins(t *testing.T) {
	f := newKFFixture(t)
	ctx := context.Background()
	id := f.writes(t, "撤回我")
	steps := []func() (string, error){
		func() (string, error) { return f.sim.KFCustomerRecalls(ctx, kfAccountA, kfCust, id) },
		func() (string, error) {
			return f.sim.KFReceptionistWrites(ctx, kfAccountA, kfCust, "zhangsan", "我来")
		},
		func() (string, error) { return f.sim.KFHandOver(ctx, kfAccountA, kfCust, "zhangsan") },
		func() (string, error) { return f.sim.KFEndSession(ctx, kfAccountA, kfCust) },
		func() (string, error) { return f.sim.KFSendFails(ctx, kfAccountA, kfCust, "wbFAILED", 10) },
	}
	for _, step := range steps {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	p := f.sync(t, "", "", 0)
	if len(p.MsgList) != 6 || len(f.rc.all()) != 6 {
		t.Fatalf("%d messages, %d callbacks", len(p.MsgList), len(f.rc.all()))
	}
	recall := p.MsgList[1]["event"].(map[string]any)
	if recall["event_type"] != "user_recall_msg" || recall["recall_msgid"] != id {
		t.Errorf("recall = %v", recall)
	}
	if m := p.MsgList[2]; m["origin"] != float64(5) || m["servicer_userid"] != "zhangsan" {
		t.Errorf("receptionist = %v", m)
	}
	if ev := p.MsgList[3]["event"].(map[string]any); ev["event_type"] != "session_status_change" ||
		ev["change_type"] != float64(1) || ev["new_servicer_userid"] != "zhangsan" {
		t.Errorf("hand-over = %v", ev)
	}
	if ev := p.MsgList[4]["event"].(map[string]any); ev["event_type"] != "session_status_change" ||
		ev["change_type"] != float64(3) || ev["old_servicer_userid"] != "zhangsan" {
		t.Errorf("end = %v", ev)
	}
	if ev := p.MsgList[5]["event"].(map[string]any); ev["event_type"] != "msg_send_fail" ||
		ev["fail_msgid"] != "wbFAILED" || ev["fail_type"] != float64(10) {
		t.Errorf("send failure = %v", ev)
	}
	if got := f.sim.KFState(kfAccountA, kfCust); got != KFStateEnded {
		t.Errorf("state = %d", got)
	}
}

func TestKFBatchGet(t *testing.T) {
	f := newKFFixture(t)
	f.writes(t, "hi")
	f.sim.SetKFNickname(kfCust, "张三")
	p := f.call(t, APIKFBatchGet, f.tok, map[string]any{"external_userid_list": []string{kfCust, "wmNOBODY"}})
	if p.ErrCode != 0 || len(p.Customers) != 1 || p.Customers[0]["nickname"] != "张三" ||
		len(p.Invalid) != 1 || p.Invalid[0] != "wmNOBODY" {
		t.Fatalf("batchget = %+v", p)
	}
	if p := f.call(t, APIKFBatchGet, f.tok, map[string]any{"external_userid_list": []string{}}); p.ErrCode != KFErrBadParam {
		t.Errorf("empty list: errcode %d", p.ErrCode)
	}
	if n := f.sim.KFBatchGetCalls(); n != 1 {
		t.Errorf("KFBatchGetCalls = %d, want 1 (the refused call is not counted)", n)
	}
}

// TestKFLostCallbackAndFaults: without a callback the message is still
// pulled (a lost callback); FailNext works on the kf APIs; KFWait wakes on
// a send.
func TestKFLostCallbackAndFaults(t *testing.T) {
	f := newKFFixture(t)
	f.sim.SetKFCallback(agentID, nil)
	f.writes(t, "lost")
	if len(f.rc.all()) != 0 {
		t.Fatal("callback posted without a callback set")
	}
	f.sim.FailNext(APIKFSyncMsg, 95007, "", 1)
	if p := f.sync(t, "", "", 0); p.ErrCode != 95007 {
		t.Errorf("injected: errcode %d", p.ErrCode)
	}
	if p := f.sync(t, "", "", 0); len(p.MsgList) != 1 {
		t.Errorf("after the fault: %+v", p)
	}
	defer func() {
		if recover() == nil {
			t.Error("FailNext accepted an unknown kf API")
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- f.sim.KFWait(ctx, func() bool { return len(f.sim.KFReceived(kfAccountA, kfCust)) == 1 })
	}()
	if p := f.sendText(t, "", "答"); p.ErrCode != 0 {
		t.Fatalf("send: %+v", p)
	}
	if err := <-done; err != nil {
		t.Errorf("KFWait: %v", err)
	}
	f.sim.FailNext("kf/send_message", 1, "", 1)
}
