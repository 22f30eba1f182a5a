package wecomsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/work/message"
)

const (
	corpID  = "ww0123456789abcdef"
	agentID = 1000002
	secret  = "helpdesk-secret"
)

// clock is a manual clock so expiry tests move time instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type apiResult struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	MsgID       string `json:"msgid"`
	InvalidUser string `json:"invaliduser"`
}

type fixture struct {
	sim   *Server
	clock *clock
	url   string // includes a path prefix, as a configured api_base would
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	clk := newClock()
	opts := Options{
		Apps: []App{
			{CorpID: corpID, AgentID: agentID, Secret: secret},
			{CorpID: corpID, AgentID: 1000003, Secret: "other-secret"},
		},
		Now: clk.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	sim := New(opts)
	ts := httptest.NewServer(sim.Handler())
	t.Cleanup(ts.Close)
	return &fixture{sim: sim, clock: clk, url: ts.URL + "/wecom"}
}

func (f *fixture) getToken(t *testing.T, corp, sec string) apiResult {
	t.Helper()
	q := url.Values{"corpid": {corp}, "corpsecret": {sec}}
	return f.do(t, http.MethodGet, "/cgi-bin/gettoken?"+q.Encode(), "")
}

func (f *fixture) token(t *testing.T) string {
	t.Helper()
	res := f.getToken(t, corpID, secret)
	if res.ErrCode != 0 {
		t.Fatalf("gettoken: %+v", res)
	}
	return res.AccessToken
}

func (f *fixture) send(t *testing.T, token string, body any) apiResult {
	t.Helper()
	var raw string
	if s, ok := body.(string); ok {
		raw = s
	} else {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		raw = string(b)
	}
	path := "/cgi-bin/message/send"
	if token != "" {
		path += "?access_token=" + url.QueryEscape(token)
	}
	return f.do(t, http.MethodPost, path, raw)
}

// roundTrip sends one request to the simulator and returns the HTTP status
// and the whole body.
func (f *fixture) roundTrip(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (f *fixture) do(t *testing.T, method, path, body string) apiResult {
	t.Helper()
	status, b := f.roundTrip(t, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d", method, path, status)
	}
	var res apiResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func text(to, content string) map[string]any {
	return map[string]any{"touser": to, "msgtype": "text", "agentid": agentID, "text": map[string]any{"content": content}}
}

func TestGetToken(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, corp, secret string
		want               int
	}{
		{"unknown corp", "ww-nope", secret, 40013},
		{"wrong secret", corpID, "nope", 40001},
		{"missing corpid", "", secret, 41002},
		{"missing secret", corpID, "", 41004},
		{"ok", corpID, secret, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.getToken(t, tt.corp, tt.secret)
			if res.ErrCode != tt.want {
				t.Fatalf("errcode = %d (%s), want %d", res.ErrCode, res.ErrMsg, tt.want)
			}
			if tt.want != 0 {
				if !strings.Contains(res.ErrMsg, "more info at") {
					t.Errorf("errmsg %q lacks WeCom's decoration", res.ErrMsg)
				}
				return
			}
			if len(res.AccessToken) < 64 || res.ExpiresIn != 7200 || res.ErrMsg != "ok" {
				t.Errorf("got %+v", res)
			}
		})
	}
	if got := f.do(t, http.MethodPost, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+secret, ""); got.ErrCode != 43001 {
		t.Errorf("POST gettoken: errcode %d, want 43001", got.ErrCode)
	}
	if n := f.sim.TokenFetches(agentID); n != 1 {
		t.Errorf("TokenFetches = %d, want 1", n)
	}
	if n := f.sim.TotalTokenFetches(); n != 6 {
		t.Errorf("TotalTokenFetches = %d, want 6", n)
	}
	if got := f.sim.Rejected(); got[40013] != 1 || got[40001] != 1 || got[43001] != 1 {
		t.Errorf("Rejected = %v", got)
	}
}

func TestTokensPerApp(t *testing.T) {
	f := newFixture(t, nil)
	a := f.token(t)
	b := f.token(t)
	if a == b {
		t.Fatal("a repeat fetch returned the same token without SameTokenWhileValid")
	}
	// The earlier token keeps working until its own expiry.
	for _, tok := range []string{a, b} {
		if res := f.send(t, tok, text("zhangsan", "hi")); res.ErrCode != 0 {
			t.Fatalf("send with %s…: %+v", tok[:8], res)
		}
	}
	if f.sim.CurrentToken(agentID) != b {
		t.Error("CurrentToken is not the newest token")
	}
	other := f.getToken(t, corpID, "other-secret")
	if res := f.send(t, other.AccessToken, text("zhangsan", "hi")); res.ErrCode != 301002 {
		t.Errorf("token of app 1000003 used for agent %d: errcode %d, want 301002", agentID, res.ErrCode)
	}
	if f.sim.TokenFetches(agentID) != 2 || f.sim.TokenFetches(1000003) != 1 {
		t.Errorf("fetches %d/%d", f.sim.TokenFetches(agentID), f.sim.TokenFetches(1000003))
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TokenLifetime = time.Hour })
	tok := f.token(t)
	f.clock.Advance(time.Hour - time.Second)
	if res := f.send(t, tok, text("zhangsan", "before")); res.ErrCode != 0 {
		t.Fatalf("just before expiry: %+v", res)
	}
	f.clock.Advance(time.Second)
	if res := f.send(t, tok, text("zhangsan", "after")); res.ErrCode != 42001 {
		t.Fatalf("at expiry: errcode %d, want 42001", res.ErrCode)
	}

	f.sim.SetTokenLifetime(90*time.Second + 500*time.Millisecond)
	if res := f.getToken(t, corpID, secret); res.ExpiresIn != 90 {
		t.Errorf("expires_in = %d, want whole seconds 90", res.ExpiresIn)
	}
}

// TestSameTokenWhileValid shows the trap: the second answer claims a full
// lifetime, but the token dies at its first expiry.
func TestSameTokenWhileValid(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.SameTokenWhileValid = true })
	first := f.getToken(t, corpID, secret)
	f.clock.Advance(time.Hour)
	second := f.getToken(t, corpID, secret)
	if second.AccessToken != first.AccessToken {
		t.Fatal("repeat fetch returned a new token")
	}
	if second.ExpiresIn != 7200 {
		t.Fatalf("expires_in = %d, want a full 7200", second.ExpiresIn)
	}
	f.clock.Advance(time.Hour)
	if res := f.send(t, second.AccessToken, text("zhangsan", "hi")); res.ErrCode != 42001 {
		t.Fatalf("errcode %d, want 42001: the token expired 2h after its first issue", res.ErrCode)
	}
	third := f.getToken(t, corpID, secret)
	if third.AccessToken == first.AccessToken {
		t.Fatal("no new token after expiry")
	}
	if f.sim.TokenFetches(agentID) != 3 {
		t.Errorf("TokenFetches = %d, want 3", f.sim.TokenFetches(agentID))
	}
}

func TestSendRefusals(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	withAgent := func(v any) map[string]any {
		m := text("zhangsan", "hi")
		m["agentid"] = v
		return m
	}
	tests := []struct {
		name  string
		token string
		body  any
		want  int
	}{
		{"missing token", "", text("zhangsan", "hi"), 41001},
		{"unknown token", "not-a-token", text("zhangsan", "hi"), 40014},
		{"bad json", tok, `{"touser":`, 40058},
		{"missing agentid", tok, map[string]any{"touser": "zhangsan", "msgtype": "text", "text": map[string]any{"content": "hi"}}, 41011},
		{"agentid not numeric", tok, withAgent("abc"), 40056},
		{"other app's agentid", tok, withAgent(1000003), 301002},
		{"empty touser", tok, text("", "hi"), 81013},
		{"empty content", tok, text("zhangsan", ""), 44004},
		{"content over 2048 bytes", tok, text("zhangsan", strings.Repeat("好", 683)), 45002},
		{"unsupported msgtype", tok, map[string]any{"touser": "zhangsan", "msgtype": "telepathy", "agentid": agentID}, 40008},
		{"image without media_id", tok, map[string]any{"touser": "zhangsan", "msgtype": "image", "agentid": agentID}, 40007},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := f.send(t, tt.token, tt.body); res.ErrCode != tt.want {
				t.Fatalf("errcode = %d (%s), want %d", res.ErrCode, res.ErrMsg, tt.want)
			}
		})
	}
	if got := f.do(t, http.MethodGet, "/cgi-bin/message/send?access_token="+tok, ""); got.ErrCode != 43003 {
		t.Errorf("GET send: errcode %d, want 43003", got.ErrCode)
	}
	if n := len(f.sim.Delivered()); n != 0 {
		t.Errorf("%d refused messages were delivered", n)
	}
	if got := f.sim.Rejected(); got[40014] != 1 || got[45002] != 1 || got[43003] != 1 {
		t.Errorf("Rejected = %v", got)
	}
	if n := f.sim.SendCalls(); n != len(tests)+1 {
		t.Errorf("SendCalls = %d, want %d", n, len(tests)+1)
	}
}

func TestSendDelivers(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)

	// Exactly 2048 bytes is allowed.
	max := strings.Repeat("好", 682) + "ab"
	if res := f.send(t, tok, text("zhangsan", max)); res.ErrCode != 0 || res.MsgID == "" {
		t.Fatalf("2048 bytes: %+v", res)
	}

	// silenceper's request type sends agentid as a string.
	req := message.SendTextRequest{
		SendRequestCommon: &message.SendRequestCommon{ToUser: "lisi", MsgType: "text", AgentID: "1000002"},
		Text:              message.TextField{Content: "你好"},
	}
	f.clock.Advance(time.Minute)
	if res := f.send(t, tok, req); res.ErrCode != 0 {
		t.Fatalf("silenceper body: %+v", res)
	}
	md := map[string]any{"touser": "wangwu", "msgtype": "markdown", "agentid": "1000002",
		"markdown": map[string]any{"content": "**bold**"}}
	if res := f.send(t, tok, md); res.ErrCode != 0 {
		t.Fatalf("markdown: %+v", res)
	}

	got := f.sim.Delivered()
	if len(got) != 3 {
		t.Fatalf("delivered %d, want 3", len(got))
	}
	want := []Sent{
		{ToUser: "zhangsan", AgentID: agentID, MsgType: "text", Content: max, At: newClock().Now()},
		{ToUser: "lisi", AgentID: agentID, MsgType: "text", Content: "你好", At: newClock().Now().Add(time.Minute)},
		{ToUser: "wangwu", AgentID: agentID, MsgType: "markdown", Content: "**bold**", At: newClock().Now().Add(time.Minute)},
	}
	ids := map[string]bool{}
	for i, g := range got {
		ids[g.MsgID] = true
		g.MsgID = ""
		if g != want[i] {
			t.Errorf("delivered[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	if len(ids) != 3 {
		t.Error("message IDs are not unique")
	}
}

func TestInvalidUser(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	f.sim.SetInvalidUser("LeftTheCompany")

	res := f.send(t, tok, text("zhangsan|lefttheCompany", "hi"))
	if res.ErrCode != 0 || res.InvalidUser != "leftthecompany" {
		t.Fatalf("partial failure: %+v", res)
	}
	if got := f.sim.Delivered(); len(got) != 1 || got[0].ToUser != "zhangsan" {
		t.Fatalf("delivered %+v, want only zhangsan", got)
	}

	res = f.send(t, tok, text("LeftTheCompany", "hi"))
	if res.ErrCode != 81013 || res.InvalidUser != "leftthecompany" {
		t.Fatalf("only recipient invalid: %+v", res)
	}
	if n := len(f.sim.Delivered()); n != 1 {
		t.Errorf("delivered %d, want 1", n)
	}
}

func TestDuplicateCheck(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	dup := func(to, content string, interval int) map[string]any {
		m := text(to, content)
		m["enable_duplicate_check"] = 1
		if interval > 0 {
			m["duplicate_check_interval"] = interval
		}
		return m
	}
	mustOK := func(body any) {
		t.Helper()
		if res := f.send(t, tok, body); res.ErrCode != 0 || res.MsgID == "" {
			t.Fatalf("%+v", res)
		}
	}

	mustOK(dup("zhangsan", "part 1", 0))
	mustOK(dup("zhangsan", "part 1", 0)) // a retry: answered ok, not shown
	mustOK(dup("lisi", "part 1", 0))     // another user
	mustOK(dup("zhangsan", "part 2", 0)) // other content
	mustOK(text("zhangsan", "part 2"))   // no duplicate check asked: shown again
	f.clock.Advance(1799 * time.Second)
	mustOK(dup("zhangsan", "part 1", 0)) // still within the default 1800s
	f.clock.Advance(time.Second)
	mustOK(dup("zhangsan", "part 1", 0)) // the window ran from the delivery, not the drops

	mustOK(dup("wangwu", "short", 60))
	f.clock.Advance(59 * time.Second)
	mustOK(dup("wangwu", "short", 60))
	f.clock.Advance(time.Second)
	mustOK(dup("wangwu", "short", 60))

	var delivered, dropped []string
	for _, s := range f.sim.Delivered() {
		delivered = append(delivered, s.ToUser+":"+s.Content)
	}
	for _, s := range f.sim.Dropped() {
		if !s.DuplicateCheck {
			t.Errorf("dropped message without duplicate check: %+v", s)
		}
		dropped = append(dropped, s.ToUser+":"+s.Content)
	}
	wantDelivered := "zhangsan:part 1,lisi:part 1,zhangsan:part 2,zhangsan:part 2,zhangsan:part 1,wangwu:short,wangwu:short"
	wantDropped := "zhangsan:part 1,zhangsan:part 1,wangwu:short"
	if got := strings.Join(delivered, ","); got != wantDelivered {
		t.Errorf("delivered %s\nwant      %s", got, wantDelivered)
	}
	if got := strings.Join(dropped, ","); got != wantDropped {
		t.Errorf("dropped %s\nwant    %s", got, wantDropped)
	}
}

func TestFailNext(t *testing.T) {
	f := newFixture(t, nil)
	f.sim.FailNext(APIGetToken, -1, "system busy", 2)
	for i := 0; i < 2; i++ {
		if res := f.getToken(t, corpID, secret); res.ErrCode != -1 || !strings.HasPrefix(res.ErrMsg, "system busy") {
			t.Fatalf("fetch %d: %+v", i, res)
		}
	}
	tok := f.token(t)

	const ipMsg = "not allow to access from your ip, hint: [1700000000_1_x], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
	f.sim.FailNext(APISend, 45009, "api freq out of limit", 1)
	f.sim.FailNext(APISend, 60020, ipMsg, 1)
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 45009 {
		t.Fatalf("errcode %d, want 45009", res.ErrCode)
	}
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 60020 || res.ErrMsg != ipMsg {
		t.Fatalf("got %+v, want 60020 with the injected errmsg verbatim", res)
	}
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 0 {
		t.Fatalf("after faults: %+v", res)
	}
	if got := f.sim.Rejected(); got[-1] != 2 || got[45009] != 1 || got[60020] != 1 {
		t.Errorf("Rejected = %v", got)
	}
	if f.sim.TokenFetches(agentID) != 1 || f.sim.TotalTokenFetches() != 3 {
		t.Errorf("fetches %d of %d", f.sim.TokenFetches(agentID), f.sim.TotalTokenFetches())
	}

	defer func() {
		if recover() == nil {
			t.Error("FailNext with an unknown api did not panic")
		}
	}()
	f.sim.FailNext("sendd", 1, "", 1)
}

func TestRevokeTokens(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.SameTokenWhileValid = true })
	tok := f.token(t)
	f.sim.RevokeTokens()
	if f.sim.CurrentToken(agentID) != "" {
		t.Error("CurrentToken survived RevokeTokens")
	}
	if res := f.send(t, tok, text("zhangsan", "hi")); res.ErrCode != 40014 {
		t.Fatalf("revoked token: errcode %d, want 40014", res.ErrCode)
	}
	fresh := f.token(t)
	if fresh == tok {
		t.Fatal("gettoken handed out the revoked token again")
	}
	if res := f.send(t, fresh, text("zhangsan", "hi")); res.ErrCode != 0 {
		t.Fatalf("fresh token: %+v", res)
	}
}

func TestDownAndLatency(t *testing.T) {
	f := newFixture(t, nil)
	f.sim.SetDown(true)
	if status, _ := f.roundTrip(t, http.MethodGet, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+secret, ""); status != http.StatusServiceUnavailable {
		t.Fatalf("down: HTTP %d, want 503", status)
	}
	f.sim.SetDown(false)
	tok := f.token(t)

	f.sim.SetLatency(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/cgi-bin/message/send?access_token="+tok,
		strings.NewReader(`{"touser":"zhangsan","msgtype":"text","agentid":1000002,"text":{"content":"hi"}}`))
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	f.sim.SetLatency(0)
	if n := len(f.sim.Delivered()); n != 0 {
		t.Errorf("a send whose client gave up was delivered")
	}
	if f.sim.SendCalls() != 1 || f.sim.TotalTokenFetches() != 2 {
		t.Errorf("calls: send %d, gettoken %d", f.sim.SendCalls(), f.sim.TotalTokenFetches())
	}
}

func TestWaitDelivered(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)

	done := make(chan []Sent)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := f.sim.WaitDelivered(ctx, 2)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	// Plain HTTP here: t.Fatal must not run outside the test goroutine.
	send := func(content string) {
		body := fmt.Sprintf(`{"touser":"zhangsan","msgtype":"text","agentid":1000002,"text":{"content":%q}}`, content)
		resp, err := http.Post(f.url+"/cgi-bin/message/send?access_token="+tok, "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	}
	send("one")
	send("two")
	if got := <-done; len(got) != 2 {
		t.Fatalf("WaitDelivered returned %d", len(got))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := f.sim.WaitDelivered(ctx, 3)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 2 {
		t.Fatalf("got %d, %v; want 2 and a deadline", len(got), err)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, nil)
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := url.Values{"corpid": {corpID}, "corpsecret": {secret}}
			resp, err := http.Get(f.url + "/cgi-bin/gettoken?" + q.Encode())
			if err != nil {
				t.Error(err)
				return
			}
			var tr apiResult
			err = json.NewDecoder(resp.Body).Decode(&tr)
			resp.Body.Close()
			if err != nil || tr.ErrCode != 0 {
				t.Errorf("gettoken: %v %+v", err, tr)
				return
			}
			body := fmt.Sprintf(`{"touser":"u%d","msgtype":"text","agentid":1000002,"text":{"content":"hi"}}`, i)
			resp, err = http.Post(f.url+"/cgi-bin/message/send?access_token="+tr.AccessToken, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = f.sim.Delivered(), f.sim.Rejected(), f.sim.CurrentToken(agentID)
		}()
	}
	wg.Wait()
	got := f.sim.Delivered()
	ids := map[string]bool{}
	for _, s := range got {
		ids[s.MsgID] = true
	}
	if len(got) != n || len(ids) != n || f.sim.TokenFetches(agentID) != n {
		t.Errorf("delivered %d, unique ids %d, fetches %d; want %d each", len(got), len(ids), f.sim.TokenFetches(agentID), n)
	}
}
