package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestConversationPages(t *testing.T) {
	e := newPanelEnv(t)
	e.seed()
	s := e.login()
	rec := e.get("/admin/conversations", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `href="/admin/conversations/helpdesk/zhangsan"`, `href="/admin/conversations/helpdesk/lisi"`,
		"2026-03-02 10:32:00", "2 messages", "still there?", `id="users-sales"`, "Nobody has written to this bot yet.")
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
