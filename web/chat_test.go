package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
)

// fakeSimulator answers Chat with what the test sets and records the calls.
type fakeSimulator struct {
	chat  func(ctx context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error)
	fail  func(n int) error
	calls []string
}

var _ Simulator = (*fakeSimulator)(nil)

func (f *fakeSimulator) Chat(ctx context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error) {
	call := req.Bot + "/" + req.User + ": " + req.Text
	if req.Group != "" {
		call += " in " + req.Group
	}
	if req.Welcome {
		call += "(welcome)"
	}
	f.calls = append(f.calls, call)
	return f.chat(ctx, req, update)
}

func (f *fakeSimulator) FailSends(_ context.Context, n int) error {
	f.calls = append(f.calls, "fail "+strconv.Itoa(n))
	if f.fail == nil {
		return nil
	}
	return f.fail(n)
}

// echoTrace is a full exchange whose answer echoes the text.
func echoTrace(_ context.Context, req ChatRequest, _ func(ChatTrace)) (ChatTrace, error) {
	return ChatTrace{
		Path: "/wecom/" + req.Bot + "/callback", CipherLen: 344, CipherPrefix: "q3J8UmVYcG9zZWQrQ2lwaGVy", Signature: "0c1f9a7be2d4",
		Encrypted: 420 * time.Microsecond, Status: 200, Answered: 3 * time.Millisecond,
		Answer: []string{"echo: " + req.Text, "part two"}, Delivered: 87 * time.Millisecond, Total: 91 * time.Millisecond,
	}, nil
}

// traceOf answers every exchange with t.
func traceOf(t ChatTrace) func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) {
	return func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) { return t, nil }
}

func newChatEnv(t *testing.T, sim *fakeSimulator) *panelEnv {
	t.Helper()
	return newPanelEnv(t, func(o *Options) { o.Simulator = sim })
}

func TestChatPageOnlyWithASimulator(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	wantStatus(t, e.get("/admin/chat", s), http.StatusNotFound)
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}}), http.StatusNotFound)
	if strings.Contains(e.get("/admin/", s).Body.String(), `href="/admin/chat"`) {
		t.Fatal("the menu links to the chat page without a simulator")
	}

	sim := &fakeSimulator{chat: echoTrace}
	e = newChatEnv(t, sim)
	s = e.login()
	wantBody(t, e.get("/admin/", s), `<a href="/admin/chat">Chat as a user</a>`)
	rec := e.get("/admin/chat", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `<a href="/admin/chat" aria-current="page">`, "<h1>Chat as a WeCom user</h1>", `id="chat-user" value="demo-user"`,
		`<option>helpdesk</option><option>sales</option>`, `id="exchanges-empty"`, `data-busy="Waiting for the answer…"`)
	// Without a session: the login, and nothing sent.
	wantRedirect(t, e.get("/admin/chat", ""), "/admin/login?next=%2Fadmin%2Fchat")
	wantRedirect(t, e.post("/admin/chat", "", url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}}), "/admin/login?next=%2Fadmin%2F")
	if len(sim.calls) > 0 {
		t.Fatalf("chatted without a session: %v", sim.calls)
	}
}

func TestChatPage(t *testing.T) {
	sim := &fakeSimulator{chat: echoTrace}
	e := newChatEnv(t, sim)
	s := e.login()
	rec := e.post("/admin/chat", s, url.Values{"bot": {"sales"}, "user": {" xiaoming "}, "text": {"<b>你好</b>"}})
	wantRedirect(t, rec, "/admin/chat?bot=sales&user=xiaoming")
	if len(sim.calls) != 1 || sim.calls[0] != "sales/xiaoming: <b>你好</b>" {
		t.Fatalf("chats %v", sim.calls)
	}
	rec = e.get("/admin/chat?bot=sales&user=xiaoming", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `<option selected>sales</option>`, `id="chat-user" value="xiaoming"`,
		"2026-03-02 10:30:00 · sales", "&lt;b&gt;你好&lt;/b&gt;",
		"Callback encrypted and signed", "344 characters of ciphertext", "<code>q3J8UmVYcG9zZWQrQ2lwaGVy…</code>", "<code>0c1f9a7be2d4</code>",
		"0.42 ms", "POST /wecom/sales/callback answered 200", "3.0 ms",
		"Answer delivered to message/send (2 parts)", "87 ms", "Total", "91 ms",
		`<div class="text answer">echo: &lt;b&gt;你好&lt;/b&gt;</div>`, `<div class="text answer">part two</div>`)

	// The newest exchange comes last, like a chat app; refused and
	// unanswered ones say so.
	sim.chat = traceOf(ChatTrace{Path: "/wecom/helpdesk/callback", Status: 200, Total: chatTimeout})
	e.now = e.now.Add(time.Minute)
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"lisi"}, "text": {"anyone?"}}), http.StatusSeeOther)
	sim.chat = traceOf(ChatTrace{Path: "/wecom/helpdesk/callback", Status: 403})
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"lisi"}, "text": {"forged"}}), http.StatusSeeOther)
	body := e.get("/admin/chat", s).Body.String()
	refused, unanswered, first := strings.Index(body, "forged"), strings.Index(body, "anyone?"), strings.Index(body, "你好")
	if first < 0 || unanswered < first || refused < unanswered {
		t.Fatalf("history not oldest first:\n%s", body)
	}
	if form := strings.Index(body, `id="chat-form"`); form < refused {
		t.Fatalf("the input is above the log:\n%s", body)
	}
	if !strings.Contains(body, "No answer within 60 s.") || !strings.Contains(body, "POST /wecom/helpdesk/callback answered 403") ||
		!strings.Contains(body, "The service refused the callback") {
		t.Fatalf("unanswered and refused exchanges:\n%s", body)
	}

	// The history belongs to the login session, and keeps the last few.
	other := e.login()
	wantBody(t, e.get("/admin/chat", other), `id="exchanges-empty"`)
	for range chatsKept {
		wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"lisi"}, "text": {"again"}}), http.StatusSeeOther)
	}
	if n := strings.Count(e.get("/admin/chat", s).Body.String(), `<li class="exchange" id="exchange-`); n != chatsKept {
		t.Fatalf("%d exchanges kept, want %d", n, chatsKept)
	}
}

func TestChatHistoryOfEndedSessionsForgotten(t *testing.T) {
	e := newChatEnv(t, &fakeSimulator{chat: echoTrace})
	form := url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}}
	gone, expired := e.login(), e.login()
	wantStatus(t, e.post("/admin/chat", gone, form), http.StatusSeeOther)
	wantRedirect(t, e.post("/admin/logout", gone, nil), "/admin/login?flash=logged_out")
	wantStatus(t, e.post("/admin/chat", expired, form), http.StatusSeeOther)
	e.now = e.now.Add(11 * time.Hour)
	s := e.login() // 12 h sessions: expired's ends first
	e.now = e.now.Add(time.Hour)
	wantStatus(t, e.post("/admin/chat", s, form), http.StatusSeeOther)
	h := e.srv.chat
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.history) != 1 || len(h.history[s]) != 1 {
		t.Fatalf("histories kept: %d, want only the live session's", len(h.history))
	}
}

func TestChatValidation(t *testing.T) {
	sim := &fakeSimulator{chat: echoTrace}
	e := newChatEnv(t, sim)
	s := e.login()
	bad := []struct {
		form url.Values
		want string
	}{
		{url.Values{"user": {"u"}, "text": {"x"}}, "Choose a bot."},
		{url.Values{"bot": {"nobody"}, "user": {"u"}, "text": {"x"}}, "Choose one of the bots."},
		{url.Values{"bot": {"helpdesk"}, "text": {"x"}}, "Enter one WeCom user ID"},
		{url.Values{"bot": {"helpdesk"}, "user": {"a|b"}, "text": {"x"}}, "Enter one WeCom user ID"},
		{url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {" \n "}}, "Enter a text."},
		{url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {strings.Repeat("长", maxSendRunes+1)}}, "too long"},
	}
	for _, b := range bad {
		rec := e.post("/admin/chat", s, b.form)
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, b.want, `id="chat-form"`)
	}
	// The form keeps what was typed.
	wantBody(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {""}}), `id="chat-user" value="u"`)
	if len(sim.calls) > 0 {
		t.Fatalf("invalid forms were sent: %v", sim.calls)
	}

	// Refused cross-site, like every form of the panel.
	rec := e.do(request{method: "POST", path: "/admin/chat", cookie: s, form: url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}},
		header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}})
	wantStatus(t, rec, http.StatusForbidden)
	if len(sim.calls) > 0 {
		t.Fatalf("a cross-site form was sent: %v", sim.calls)
	}

	// A callback that could not be sent is an error page, its details logged only.
	sim.chat = func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) {
		return ChatTrace{}, errors.New("demo chat: dial tcp 127.0.0.1:1: connection refused")
	}
	rec = e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}})
	wantStatus(t, rec, http.StatusInternalServerError)
	if strings.Contains(rec.Body.String(), "connection refused") {
		t.Fatalf("the error page shows the error: %s", rec.Body)
	}
	sim.chat = func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) {
		return ChatTrace{}, adapter.ErrUnknownBot
	}
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"sales"}, "user": {"u"}, "text": {"x"}}), http.StatusNotFound)
}

func TestChatWaitsWithADeadline(t *testing.T) {
	var deadline time.Time
	sim := &fakeSimulator{chat: func(ctx context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error) {
		deadline, _ = ctx.Deadline()
		return echoTrace(ctx, req, update)
	}}
	e := newChatEnv(t, sim)
	s := e.login()
	start := time.Now()
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}}), http.StatusSeeOther)
	if deadline.Before(start.Add(chatTimeout)) || deadline.After(time.Now().Add(chatTimeout)) {
		t.Fatalf("Chat's deadline %v after the post, want %v", deadline.Sub(start), chatTimeout)
	}
}

// TestChatPolling: while an exchange runs, the page's JSON shows it
// pending with the stream so far, in the log's HTML too; once Chat returns,
// done. The script's own post gets the same JSON instead of a redirect.
func TestChatPolling(t *testing.T) {
	grown, release := make(chan struct{}), make(chan struct{})
	sim := &fakeSimulator{chat: func(_ context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error) {
		t := ChatTrace{Path: "/wecom/assistant/callback", Status: 200, AIBot: true, Stream: "第一段"}
		update(t)
		close(grown)
		<-release
		t.Stream, t.Refreshes, t.Finished = "第一段，第二段", 2, true
		t.Later = []string{"the rest via response_url"}
		return t, nil
	}}
	e := newChatEnv(t, sim)
	s := e.login()
	state := func() chatJSON {
		t.Helper()
		rec := e.get("/admin/chat?format=json", s)
		wantStatus(t, rec, http.StatusOK)
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		var out chatJSON
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%v: %s", err, rec.Body)
		}
		return out
	}
	if st := state(); st.Pending || len(st.Exchanges) != 0 || !strings.Contains(st.HTML, `id="exchanges-empty"`) {
		t.Fatalf("before: %+v", st)
	}

	// The script's post, run by hand: e.do keeps a log of responses that is
	// not for two goroutines.
	form := url.Values{"bot": {"sales"}, "user": {"xiaoming"}, "text": {"讲个长故事"}, "chat": {"group"}}
	req := httptest.NewRequest(http.MethodPost, "http://example.com/admin/chat", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: s})
	posted := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.h.ServeHTTP(posted, req)
	}()
	<-grown
	st := state()
	if !st.Pending || len(st.Exchanges) != 1 || st.Exchanges[0].Stream != "第一段" || st.Exchanges[0].Done ||
		st.Exchanges[0].Group != chatGroup || !strings.Contains(st.HTML, `<li class="exchange pending"`) ||
		!strings.Contains(st.HTML, "Waiting for the answer…") || !strings.Contains(st.HTML, "Streaming; polls by WeCom so far: 0") {
		t.Fatalf("while streaming: %+v", st)
	}
	close(release)
	<-done
	if posted.Code != http.StatusOK || posted.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("the script's post: %d %s", posted.Code, posted.Body)
	}
	st = state()
	x := st.Exchanges[0]
	if st.Pending || !x.Done || !x.Finished || x.Stream != "第一段，第二段" || x.Refreshes != 2 || len(x.Later) != 1 ||
		x.Text != "讲个长故事" || x.Status != 200 {
		t.Fatalf("after: %+v", st)
	}
	for _, want := range []string{"Stream finished; polls by WeCom: 2", "The rest went through response_url (parts: 1)",
		`<div class="text answer stream">第一段，第二段</div>`, `<div class="text answer later">the rest via response_url</div>`,
		"group " + chatGroup, "Total"} {
		if !strings.Contains(st.HTML, want) {
			t.Errorf("the log lacks %q:\n%s", want, st.HTML)
		}
	}
	// The page renders the log the same way, and asks the script to poll
	// only while something is pending.
	page := e.get("/admin/chat?bot=sales&user=xiaoming&chat=group", s).Body.String()
	if !strings.Contains(page, `<div class="text answer stream">第一段，第二段</div>`) || strings.Contains(page, "data-pending") ||
		!strings.Contains(page, `<option value="group" selected>`) || !strings.Contains(page, `src="/admin/static/chat.js?v=`) {
		t.Fatalf("page:\n%s", page)
	}
	if sim.calls[0] != "sales/xiaoming: 讲个长故事 in "+chatGroup {
		t.Fatalf("calls %v", sim.calls)
	}
}

// TestChatWelcomeAndFailingSends: the welcome button needs no text; the
// failing control takes 1..chatMaxFailures and says what it did.
func TestChatWelcomeAndFailingSends(t *testing.T) {
	sim := &fakeSimulator{chat: traceOf(ChatTrace{Path: "/wecom/helpdesk/callback", Status: 200, Answer: []string{"欢迎！"}})}
	e := newChatEnv(t, sim)
	s := e.login()
	wantRedirect(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u1"}, "action": {"welcome"}, "chat": {"group"}}),
		"/admin/chat?bot=helpdesk&chat=group&user=u1")
	wantBody(t, e.get("/admin/chat", s), "<em>opened the chat</em>", `<div class="text answer">欢迎！</div>`)
	sim.chat = traceOf(ChatTrace{Path: "/wecom/helpdesk/callback", Status: 200})
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"u1"}, "action": {"welcome"}}), http.StatusSeeOther)
	wantBody(t, e.get("/admin/chat", s), "No welcome: replies.welcome is empty.")

	wantRedirect(t, e.post("/admin/chat", s, url.Values{"action": {"fail"}, "n": {"3"}, "bot": {"helpdesk"}, "user": {"u1"}}),
		"/admin/chat?bot=helpdesk&flash=chat_failing&user=u1")
	wantBody(t, e.get("/admin/chat?flash=chat_failing", s), "The simulator will refuse the next sends (message/send, kf/send_msg).")
	for _, n := range []string{"0", "21", "x", ""} {
		rec := e.post("/admin/chat", s, url.Values{"action": {"fail"}, "n": {n}})
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, "Enter a number from 1 to 20.")
	}
	sim.fail = func(int) error { return ErrChatUnsupported }
	rec := e.do(request{method: http.MethodPost, path: "/admin/chat", cookie: s, form: url.Values{"action": {"fail"}, "n": {"1"}},
		header: map[string]string{"Accept": "application/json"}})
	wantStatus(t, rec, http.StatusBadRequest)
	wantBody(t, rec, `{"error":"Only the demo's own simulator can fail sends."}`)
	want := []string{"helpdesk/u1: (welcome)", "helpdesk/u1: (welcome)", "fail 3", "fail 1"}
	if strings.Join(sim.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", sim.calls, want)
	}
}

// TestChatAsAWeChatCustomer: the apps' 微信客服 accounts are targets beside
// the bots; writing to one plays a customer of the app that owns it, and
// the log shows the pull, the answer at kf/send_msg and the receptionist's
// moves.
func TestChatAsAWeChatCustomer(t *testing.T) {
	const account = "wkTEST0000000000000000000000KF01"
	var got []ChatRequest
	sim := &fakeSimulator{chat: func(_ context.Context, req ChatRequest, _ func(ChatTrace)) (ChatTrace, error) {
		got = append(got, req)
		t := ChatTrace{Path: "/wecom/helpdesk/callback", CipherLen: 512, Status: 200, KF: true, Pulls: 1,
			Delivered: 40 * time.Millisecond, Total: 45 * time.Millisecond}
		switch {
		case req.Welcome:
			t.Answer = []string{"欢迎光临"}
		case req.KFAction != "":
		case req.Text == "human":
			t.Human = true
		default:
			t.Answer, t.Pulls = []string{"echo: " + req.Text}, 2
		}
		return t, nil
	}}
	e := newChatEnv(t, sim)
	s := e.login()
	// Without kf accounts: no such target, no receptionist's buttons.
	if body := e.get("/admin/chat", s).Body.String(); strings.Contains(body, `value="kf:`) || strings.Contains(body, `id="chat-kf"`) {
		t.Fatalf("kf targets without kf:\n%s", body)
	}
	e.bots[0].KF = &adapter.KFStatus{Accounts: []string{account}}
	rec := e.get("/admin/chat", s)
	wantBody(t, rec, `<option>helpdesk</option><option>sales</option><option value="kf:`+account+`">微信客服 `+account+` (app helpdesk)</option>`,
		`<div class="chat-actions" id="chat-kf" hidden>`, "write as a WeChat customer")

	wantRedirect(t, e.post("/admin/chat", s, url.Values{"bot": {"kf:" + account}, "user": {"wmCustomer1"}, "text": {"你好"}, "chat": {"group"}}),
		"/admin/chat?bot=kf%3A"+account+"&chat=group&user=wmCustomer1")
	if len(got) != 1 || !reflect.DeepEqual(got[0], ChatRequest{Bot: "helpdesk", User: "wmCustomer1", Text: "你好", KF: account}) {
		t.Fatalf("requests %+v", got)
	}
	page := e.get("/admin/chat?bot=kf:"+account+"&user=wmCustomer1", s).Body.String()
	for _, want := range []string{`<option value="kf:` + account + `" selected>`, `<div class="chat-actions" id="chat-kf">`,
		"· helpdesk · 微信客服 " + account, "POST /wecom/helpdesk/callback answered 200", "The service pulled with kf/sync_msg (2 calls)",
		"Answer delivered to kf/send_msg (1 part)", `<div class="text answer">echo: 你好</div>`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "message/send (") || strings.Contains(page, "group "+chatGroup) {
		t.Errorf("a kf exchange shown as an app's or in a group:\n%s", page)
	}

	// Entering, the receptionist's moves, a text a person handles.
	for _, form := range []url.Values{{"action": {"welcome"}}, {"action": {ChatKFTakeOver}}, {"text": {"human"}}, {"action": {ChatKFEnd}}} {
		form.Set("bot", "kf:"+account)
		form.Set("user", "wmCustomer1")
		wantStatus(t, e.post("/admin/chat", s, form), http.StatusSeeOther)
	}
	page = e.get("/admin/chat", s).Body.String()
	for _, want := range []string{"Welcome delivered to kf/send_msg_on_event", `<div class="text answer">欢迎光临</div>`,
		"<em>a receptionist took the conversation over</em>", "A person handles this customer now",
		`<li class="human"><span>Handled by a person`, "<em>the receptionist ended the conversation</em>",
		"the bot answers the customer&#39;s next message", "The service pulled with kf/sync_msg (1 call)"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if len(got) != 5 || !got[1].Welcome || got[2].KFAction != ChatKFTakeOver || got[3].Text != "human" || got[4].KFAction != ChatKFEnd ||
		got[4].Bot != "helpdesk" || got[4].KF != account {
		t.Fatalf("requests %+v", got)
	}
	// The JSON of the polling says which exchanges were kf.
	var st chatJSON
	if err := json.Unmarshal(e.get("/admin/chat?format=json", s).Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if x := st.Exchanges[len(st.Exchanges)-2]; x.KF != account || !x.Human || x.Pulls != 1 {
		t.Fatalf("JSON of the person's exchange %+v", x)
	}
	if t.Failed() {
		t.Logf("page:\n%s", page)
	}
}

// TestChatKFRefused: an unknown account, the receptionist's buttons on a
// bot, and a simulator that cannot play customers are refused with a
// reason; nothing is sent.
func TestChatKFRefused(t *testing.T) {
	sim := &fakeSimulator{chat: func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) {
		return ChatTrace{}, fmt.Errorf("simulator chat: %w", ErrChatUnsupported)
	}}
	e := newChatEnv(t, sim)
	e.bots[0].KF = &adapter.KFStatus{Accounts: []string{"wkA"}}
	s := e.login()
	for _, c := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"bot": {"kf:wkNOBODY"}, "user": {"wm1"}, "text": {"x"}}, "Choose one of the bots."},
		{url.Values{"bot": {"helpdesk"}, "user": {"wm1"}, "action": {ChatKFTakeOver}}, "Choose a 微信客服 account to play its receptionist."},
	} {
		rec := e.post("/admin/chat", s, c.form)
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, c.want)
	}
	if len(sim.calls) != 0 {
		t.Fatalf("sent: %v", sim.calls)
	}
	rec := e.do(request{method: http.MethodPost, path: "/admin/chat", cookie: s, form: url.Values{"bot": {"kf:wkA"}, "user": {"wm1"}, "text": {"x"}},
		header: map[string]string{"Accept": "application/json"}})
	wantStatus(t, rec, http.StatusBadRequest)
	wantBody(t, rec, `{"error":"Only the demo's own simulator can play a WeChat customer."}`)
	if body := e.get("/admin/chat", s).Body.String(); !strings.Contains(body, `id="exchanges-empty"`) {
		t.Fatalf("the refused exchange stays in the log:\n%s", body)
	}
}
