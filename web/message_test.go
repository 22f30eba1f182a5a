package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/storage"
)

// A message whose answer is streaming is pending, in the filter as in the
// dashboard's counts.
func TestMessagesPendingIncludesStreaming(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	m := &storage.Message{Bot: "helpdesk", DedupeKey: "4", UserID: "wangwu", MsgType: "text", Content: "write a lot"}
	if _, err := e.db.InsertMessage(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	must(t, e.db.StartAnswer(t.Context(), m.ID))
	must(t, e.db.AppendParts(t.Context(), m.ID, "helpdesk", "wangwu", []string{"first paragraph\n\n"}))
	if body := e.get("/admin/messages?status=pending", s).Body.String(); !strings.Contains(body, "msg-"+itoa(m.ID)) {
		t.Fatal("?status=pending leaves out a message whose answer is streaming")
	}
}

func TestMessagesPage(t *testing.T) {
	e := newPanelEnv(t)
	answered, failed, pending := e.seed()
	s := e.login()
	rec := e.get("/admin/messages", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, "msg-"+itoa(answered), "msg-"+itoa(failed), "msg-"+itoa(pending),
		"report please", "the report", "not delivered", "errcode 40003: invalid userid", "Reason:",
		`action="/admin/messages/`+itoa(failed)+`/resend"`, "The answer is being prepared.")
	if n := strings.Count(rec.Body.String(), `class="resend"`); n != 1 {
		t.Fatalf("%d re-send buttons, want 1 (the failed answer)", n)
	}
	filters := []struct {
		query string
		want  []int64
	}{
		{"status=failed", []int64{failed}},
		{"status=pending", []int64{pending}},
		{"status=answered", []int64{answered}},
		{"user=lisi", []int64{failed, pending}},
		{"bot=sales", nil},
		{"bot=helpdesk&user=zhangsan&status=answered", []int64{answered}},
		{"status=bogus", []int64{answered, failed, pending}},
	}
	for _, f := range filters {
		t.Run(f.query, func(t *testing.T) {
			rec := e.get("/admin/messages?"+f.query, s)
			wantStatus(t, rec, 200)
			got := regexp.MustCompile(`id="msg-(\d+)"`).FindAllStringSubmatch(rec.Body.String(), -1)
			if len(got) != len(f.want) {
				t.Fatalf("%d messages, want %v", len(got), f.want)
			}
			for _, id := range f.want {
				wantBody(t, rec, `id="msg-`+itoa(id)+`"`)
			}
		})
	}
	rec = e.get("/admin/messages?status=failed&user=lisi", s)
	wantBody(t, rec, `name="back" value="/admin/messages?status=failed&amp;user=lisi"`, `<option value="failed" selected>`)

	rec = e.post("/admin/messages/"+itoa(failed)+"/resend", s, url.Values{"back": {"/admin/messages?status=failed&user=lisi"}})
	wantRedirect(t, rec, "/admin/messages?flash=resent&status=failed&user=lisi")
	if len(e.outbox.resent) != 1 || e.outbox.resent[0] != failed {
		t.Fatalf("resent %v", e.outbox.resent)
	}
	wantBody(t, e.get("/admin/messages?flash=resent", s), "The answer is back in the outbox.")
	wantStatus(t, e.post("/admin/messages/x/resend", s, nil), http.StatusBadRequest)
	e.outbox.resendErr = storage.ErrNotFound
	rec = e.post("/admin/messages/"+itoa(answered)+"/resend", s, url.Values{"back": {"https://evil.example/"}})
	wantStatus(t, rec, http.StatusNotFound)
	e.outbox.resendErr = nil
	rec = e.post("/admin/messages/"+itoa(failed)+"/resend", s, url.Values{"back": {"https://evil.example/"}})
	wantRedirect(t, rec, "/admin/messages?flash=resent")
}

// Failure reasons: the model's said in the admin's language with a hint,
// the stored error kept for the operator; others as stored.
func TestMessagesFailureReasons(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	fail := func(key, reason string) int64 {
		m := &storage.Message{Bot: "helpdesk", DedupeKey: key, UserID: "u", MsgType: "text", Content: "hi"}
		if _, err := e.db.InsertMessage(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		must(t, e.db.SaveAnswer(t.Context(), storage.Answer{MessageID: m.ID, Bot: "helpdesk", UserID: "u", Failure: reason}))
		return m.ID
	}
	dns := "llm: chat completion stream: dial tcp: lookup api.example.invalid: no such host"
	fail("dns", "model unreachable: "+dns)
	fail("key", "model bad_key: llm: chat completion: status 401: Incorrect API key")
	fail("old", "llm: llm: chat completion: status 500: upstream")
	rec := e.do(request{method: "GET", path: "/admin/messages", cookie: s, header: map[string]string{"Accept-Language": "en"}})
	wantStatus(t, rec, 200)
	wantBody(t, rec,
		`title="model unreachable: `+dns+`"`, "The model API cannot be reached.", "Check llm.base_url", "<code>"+dns+"</code>",
		"The model API refused the key.", "Check llm.api_key.", "status 401: Incorrect API key",
		"The model&#39;s answer failed.", "<code>llm: chat completion: status 500: upstream</code>",
	)
	// The old row's doubled prefix stays only in the raw reason (title).
	if n := strings.Count(rec.Body.String(), "llm: llm:"); n != 1 {
		t.Errorf("a doubled prefix shown %d times, want once (the title of the old row)", n)
	}
	zh := e.do(request{method: "GET", path: "/admin/messages", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	wantBody(t, zh, "无法连接模型 API。", "请检查 llm.api_key。", "错误详情")

	// A bot with its own key: the hint names that key.
	e.report.Models = []BotModel{{Bot: "helpdesk", Overrides: []string{"api_key"}, KeyName: "bots[0] (helpdesk).llm.api_key"}}
	rec = e.do(request{method: "GET", path: "/admin/messages", cookie: s, header: map[string]string{"Accept-Language": "en"}})
	wantStatus(t, rec, 200)
	if body := rec.Body.String(); !strings.Contains(body, "Check bots[0] (helpdesk).llm.api_key (the bot&#39;s own key).") || strings.Contains(body, "Check llm.api_key.") {
		t.Error("want the hint to name helpdesk's own key, not llm.api_key")
	}
	zh = e.do(request{method: "GET", path: "/admin/messages", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	wantBody(t, zh, "请检查 bots[0] (helpdesk).llm.api_key（该机器人自己的密钥）。")
}

func TestMessagesPaging(t *testing.T) {
	e := newPanelEnv(t)
	for i := range messagesShown + 3 {
		m := &storage.Message{Bot: "helpdesk", DedupeKey: itoa(int64(i)), UserID: "u", MsgType: "text", Content: "m"}
		_, err := e.db.InsertMessage(t.Context(), m)
		must(t, err)
	}
	s := e.login()
	rec := e.get("/admin/messages", s)
	if n := strings.Count(rec.Body.String(), `class="card msg`); n != messagesShown {
		t.Fatalf("%d messages on the first page", n)
	}
	older := regexp.MustCompile(`href="(/admin/messages\?before=\d+)"`).FindStringSubmatch(rec.Body.String())
	if older == nil {
		t.Fatal("no link to older messages")
	}
	rec = e.get(older[1], s)
	if n := strings.Count(rec.Body.String(), `class="card msg`); n != 3 {
		t.Fatalf("%d messages on the second page, want 3", n)
	}
}

// TestMessagesAIBot: an AI bot's messages are listed like others, a group
// chat as a group with its chat id, and the user's verdict on an answer
// is shown with its note; a withdrawn verdict is not. The single-use
// response_url never is.
func TestMessagesAIBot(t *testing.T) {
	e := newPanelEnv(t)
	e.withAIBots()
	single, group, withdrawn := e.seedAIBot()
	s := e.login()
	rec := e.get("/admin/messages?bot="+aiCallbackBot, s)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	article := func(id int64) string {
		t.Helper()
		m := regexp.MustCompile(`(?s)<article [^>]*id="msg-` + itoa(id) + `">.*?</article>`).FindString(body)
		if m == "" {
			t.Fatalf("no message %d:\n%s", id, body)
		}
		return m
	}
	for _, c := range []struct {
		id        int64
		want, not []string
	}{
		{single, []string{"what is the VPN address?", `<span class="verdict">👍 accurate</span>`}, []string{"group"}},
		{group, []string{"when is the holiday?", `<span class="badge group">group</span>wrkGROUP1</a>`,
			`href="/admin/conversations/assistant/chat:wrkGROUP1"`,
			`<span class="verdict">👎 inaccurate</span> · <span class="note">wrong dates</span>`, "2026-03-02 10:36:00"}, nil},
		{withdrawn, []string{"thanks"}, []string{"feedback"}},
	} {
		a := article(c.id)
		for _, w := range c.want {
			if !strings.Contains(a, w) {
				t.Errorf("message %d lacks %q:\n%s", c.id, w, a)
			}
		}
		for _, n := range c.not {
			if strings.Contains(a, n) {
				t.Errorf("message %d has %q:\n%s", c.id, n, a)
			}
		}
	}
	zh := e.do(request{method: "GET", path: "/admin/messages?bot=" + aiCallbackBot, cookie: s, header: map[string]string{"Accept-Language": "zh"}})
	wantBody(t, zh, "👍 准确", "👎 不准确", ">群聊<", "用户反馈：")
	// The group filter by its stored id.
	rec = e.get("/admin/messages?user=chat:wrkGROUP1", s)
	if got := regexp.MustCompile(`id="msg-(\d+)"`).FindAllStringSubmatch(rec.Body.String(), -1); len(got) != 1 || got[0][1] != itoa(group) {
		t.Errorf("?user=chat:wrkGROUP1 shows %v, want message %d", got, group)
	}
	for _, r := range e.responses {
		if strings.Contains(r, aiResponseCode) {
			t.Fatalf("a response_url appears in a page:\n%s", r)
		}
	}
}

// TestMessageRowsFragment: the rows endpoint the Messages page polls
// answers the asked messages as the page shows them, without the layout,
// behind the login; a pending row comes back final once it is.
func TestMessageRowsFragment(t *testing.T) {
	e := newPanelEnv(t)
	answered, failed, pending := e.seed()
	s := e.login()

	page := e.get("/admin/messages", s)
	wantBody(t, page, `data-rows="/admin/messages/rows"`, `<article class="card msg status-pending" data-id="`+itoa(pending)+`" id="msg-`+itoa(pending)+`">`)

	path := "/admin/messages/rows?ids=" + itoa(pending) + "," + itoa(failed) + "&back=" + url.QueryEscape("/admin/messages?status=pending")
	rec := e.get(path, s)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	if strings.Contains(body, "<html") || strings.Contains(body, "msg-"+itoa(answered)) {
		t.Fatalf("the fragment is more than the asked rows:\n%s", body)
	}
	wantBody(t, rec, `id="msg-`+itoa(pending)+`"`, "status-pending", "The answer is being prepared.",
		`id="msg-`+itoa(failed)+`"`, `name="back" value="/admin/messages?status=pending"`)

	// The pending message is answered: its row comes back answered.
	must(t, e.db.SaveAnswer(t.Context(), storage.Answer{MessageID: pending, Bot: "helpdesk", UserID: "lisi", Parts: []string{"yes, here"}}))
	parts, err := e.db.DueParts(t.Context(), e.now, 10)
	must(t, err)
	for _, p := range parts {
		if p.MessageID == pending {
			must(t, e.db.MarkSent(t.Context(), p.ID, "w1"))
		}
	}
	rec = e.get("/admin/messages/rows?ids="+itoa(pending), s)
	wantBody(t, rec, `class="card msg status-answered" data-id="`+itoa(pending)+`"`, "yes, here")
	if strings.Contains(rec.Body.String(), "status-pending") {
		t.Errorf("an answered row still pending:\n%s", rec.Body)
	}
	// In the admin's language; a back outside Messages is not kept.
	zh := e.do(request{method: "GET", path: "/admin/messages/rows?ids=" + itoa(failed) + "&back=https://evil.example/", cookie: s,
		header: map[string]string{"Accept-Language": "zh"}})
	wantBody(t, zh, "重新发送", `name="back" value="/admin/messages"`)

	wantStatus(t, e.get("/admin/messages/rows?ids=x", s), http.StatusBadRequest)
	wantStatus(t, e.get("/admin/messages/rows?ids=", s), http.StatusBadRequest)
	if rec := e.get(path, ""); rec.Code == 200 {
		t.Errorf("rows without a login: %d", rec.Code)
	}
}
