package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

func TestConversationPages(t *testing.T) {
	e := newPanelEnv(t)
	e.seed()
	s := e.login()
	rec := e.get("/admin/conversations", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `href="/admin/conversations/helpdesk/zhangsan"`, `href="/admin/conversations/helpdesk/lisi"`,
		"2026-03-02 10:32:00", "2 messages", "1 message</span>", "still there?", `id="users-sales"`, "Nobody has written to this bot yet.")
	if i, j := strings.Index(rec.Body.String(), "/helpdesk/lisi"), strings.Index(rec.Body.String(), "/helpdesk/zhangsan"); i > j {
		t.Error("the most recent user is not first")
	}
	wantBody(t, e.get("/admin/conversations?bot=sales", s), `id="users-sales"`)
	if strings.Contains(e.get("/admin/conversations?bot=sales", s).Body.String(), "users-helpdesk") {
		t.Error("?bot=sales shows helpdesk")
	}

	rec = e.get("/admin/conversations/helpdesk/zhangsan", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, "你好", "您好！有什么可以帮您？", "2026-03-02 10:30:00", "Reset conversation",
		`action="/admin/conversations/helpdesk/zhangsan/reset"`, `data-confirm="Reset the conversation of zhangsan?`)

	rec = e.post("/admin/conversations/helpdesk/zhangsan/reset", s, nil)
	wantRedirect(t, rec, "/admin/conversations/helpdesk/zhangsan?flash=conversation_reset")
	rec = e.get("/admin/conversations/helpdesk/zhangsan?flash=conversation_reset", s)
	wantBody(t, rec, "Conversation reset.", `id="history-empty"`)
	turns, err := e.db.Conversation(t.Context(), "helpdesk", "zhangsan", 0)
	if err != nil || len(turns) != 0 {
		t.Fatalf("after reset: %v %v", turns, err)
	}

	wantStatus(t, e.get("/admin/conversations/nobody/zhangsan", s), http.StatusNotFound)
	wantStatus(t, e.post("/admin/conversations/nobody/zhangsan/reset", s, nil), http.StatusNotFound)
	// A user id that needs escaping round-trips.
	rec = e.get("/admin/conversations/helpdesk/"+url.PathEscape("a b?c"), s)
	wantBody(t, rec, `action="/admin/conversations/helpdesk/a%20b%3Fc/reset"`)
}

// TestConversationsAIBot: an AI bot's group chats are listed and shown as
// groups; a bot that can only answer offers no send.
func TestConversationsAIBot(t *testing.T) {
	e := newPanelEnv(t)
	e.withAIBots()
	e.seedAIBot()
	s := e.login()
	rec := e.get("/admin/conversations?bot="+aiCallbackBot, s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `href="/admin/conversations/assistant/chat:wrkGROUP1"><span class="badge group">group</span>wrkGROUP1</a>`,
		`href="/admin/conversations/assistant/wangwu">wangwu</a>`)
	wantBody(t, e.do(request{method: "GET", path: "/admin/conversations?bot=" + aiCallbackBot, cookie: s,
		header: map[string]string{"Accept-Language": "zh"}}), `<span class="badge group">群聊</span>wrkGROUP1`)

	rec = e.get("/admin/conversations/assistant/chat:wrkGROUP1", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `<h1><span class="badge group">group</span>wrkGROUP1</h1>`)
	if strings.Contains(rec.Body.String(), "/admin/send?") {
		t.Error("a callback AI bot's conversation offers a send")
	}
	wantBody(t, e.get("/admin/conversations/ws/chat:wrkGROUP2", s), `href="/admin/send?bot=ws&amp;user=chat%3awrkGROUP2"`)
	wantBody(t, e.get("/admin/conversations/helpdesk/zhangsan", s), `href="/admin/send?bot=helpdesk&amp;user=zhangsan"`)
}

// TestConversationFromMessages: the page shows every message of the user
// and its answer, oldest first, across resets, and marks each reset: a
// /reset the bot answered, and the panel's; the model's context after
// them is a section of its own.
func TestConversationFromMessages(t *testing.T) {
	e := newPanelEnv(t)
	ctx := t.Context()
	s := e.login()
	say := func(key, text string, parts ...string) int64 {
		m := &storage.Message{Bot: "helpdesk", DedupeKey: key, UserID: "zhaoliu", MsgType: "text", Content: text}
		_, err := e.db.InsertMessage(ctx, m)
		must(t, err)
		a := storage.Answer{MessageID: m.ID, Bot: "helpdesk", UserID: "zhaoliu", Parts: parts,
			ResetConversation: adapter.IsResetCommand(text)}
		if !a.ResetConversation {
			a.UserTurn, a.AssistantTurn = text, strings.Join(parts, "")
		}
		must(t, e.db.SaveAnswer(ctx, a))
		e.now = e.now.Add(time.Minute)
		return m.ID
	}
	say("1", "first question", "first answer")
	say("2", "/reset", "reset done")
	say("3", "second question", "second answer")
	must(t, e.db.ResetConversation(ctx, "helpdesk", "zhaoliu"))
	e.now = e.now.Add(time.Minute)
	say("4", "third question", "third answer")
	// A /reset not answered yet has reset nothing.
	_, err := e.db.InsertMessage(ctx, &storage.Message{Bot: "helpdesk", DedupeKey: "5", UserID: "zhaoliu", MsgType: "text", Content: "/new"})
	must(t, err)

	rec := e.get("/admin/conversations/helpdesk/zhaoliu", s)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	exchanges, context, ok := strings.Cut(body, `id="history"`)
	if !ok {
		t.Fatalf("no model context section:\n%s", body)
	}
	want := []string{"first question", "first answer", "/reset", "reset done",
		`class="reset-marker reset-user"`, "The model&#39;s context was reset here (the user&#39;s command)",
		"second question", "second answer",
		`class="reset-marker reset-admin"`, "The model&#39;s context was reset here from the panel · <time>2026-03-02 10:33:00</time>",
		"third question", "third answer", "/new", "The answer is being prepared."}
	at := 0
	for _, w := range want {
		i := strings.Index(exchanges[at:], w)
		if i < 0 {
			t.Fatalf("exchanges lack %q after offset %d (or out of order):\n%s", w, at, exchanges)
		}
		at += i + len(w)
	}
	if n := strings.Count(exchanges, "reset-marker"); n != 2 {
		t.Errorf("%d reset markers, want 2 (an unanswered /new resets nothing)", n)
	}
	// The model's context is what followed the last reset.
	if !strings.Contains(context, "third question") || strings.Contains(context, "second question") {
		t.Errorf("model's context:\n%s", context)
	}

	zh := e.do(request{method: "GET", path: "/admin/conversations/helpdesk/zhaoliu", cookie: s, header: map[string]string{"Accept-Language": "zh"}})
	wantBody(t, zh, "模型上下文在此重置（用户指令）", "模型上下文在此由管理面板重置")
}
