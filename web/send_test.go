package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter"
)

func TestSendPage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	rec := e.get("/admin/send?bot=sales&user=lisi", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `<option selected>sales</option>`, `id="send-user" value="lisi"`, "Nothing sent from the panel yet.")

	rec = e.post("/admin/send", s, url.Values{"bot": {"helpdesk"}, "user": {" zhangsan "}, "text": {"维护通知：今晚 22:00"}})
	wantRedirect(t, rec, "/admin/send?bot=helpdesk&flash=queued&user=zhangsan")
	if len(e.outbox.sent) != 1 || e.outbox.sent[0] != "helpdesk/zhangsan: 维护通知：今晚 22:00" {
		t.Fatalf("sent %v", e.outbox.sent)
	}
	must(t, e.db.EnqueueText(t.Context(), "helpdesk", "zhangsan", []string{"queued text"}))
	wantBody(t, e.get("/admin/send?flash=queued", s), "Queued for delivery.", "queued text", "waiting in the outbox")

	bad := []struct {
		form url.Values
		want string
	}{
		{url.Values{"user": {"u"}, "text": {"x"}}, "Choose a bot."},
		{url.Values{"bot": {"helpdesk"}, "text": {"x"}}, "Enter one WeCom user ID"},
		{url.Values{"bot": {"helpdesk"}, "user": {"@all"}, "text": {"x"}}, "Enter one WeCom user ID"},
		{url.Values{"bot": {"helpdesk"}, "user": {"a|b"}, "text": {"x"}}, "Enter one WeCom user ID"},
		{url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"  \n"}}, "Enter a text."},
		{url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {strings.Repeat("长", maxSendRunes+1)}}, "too long"},
	}
	for _, b := range bad {
		rec := e.post("/admin/send", s, b.form)
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, b.want)
	}
	if len(e.outbox.sent) != 1 {
		t.Fatalf("an invalid form was sent: %v", e.outbox.sent)
	}
	// The form keeps what was typed.
	rec = e.post("/admin/send", s, url.Values{"bot": {"helpdesk"}, "user": {"@all"}, "text": {"<b>keep</b>"}})
	wantBody(t, rec, "&lt;b&gt;keep&lt;/b&gt;</textarea>")

	e.outbox.sendErr = adapter.ErrUnknownBot
	wantStatus(t, e.post("/admin/send", s, url.Values{"bot": {"nobody"}, "user": {"u"}, "text": {"x"}}), http.StatusNotFound)
}

// TestSendAIBots: the form offers the apps and the AI bots on the long
// connection, not those that can only answer; an AI bot on the long
// connection can write to a group chat (chat:<chatid>), an app cannot.
func TestSendAIBots(t *testing.T) {
	e := newPanelEnv(t)
	e.withAIBots()
	s := e.login()
	rec := e.get("/admin/send", s)
	wantBody(t, rec, "<option>helpdesk</option>", "<option>ws</option>")
	if strings.Contains(rec.Body.String(), "<option>assistant</option>") {
		t.Error("the form offers a callback AI bot")
	}
	rec = e.post("/admin/send", s, url.Values{"bot": {"ws"}, "user": {"chat:wrkGROUP1"}, "text": {"hello group"}})
	wantStatus(t, rec, http.StatusSeeOther)
	for _, bot := range []string{"helpdesk", "assistant"} {
		rec = e.post("/admin/send", s, url.Values{"bot": {bot}, "user": {"chat:wrkGROUP1"}, "text": {"x"}})
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, "Enter one WeCom user ID")
	}
	wantStatus(t, e.post("/admin/send", s, url.Values{"bot": {"ws"}, "user": {"chat:"}, "text": {"x"}}), http.StatusBadRequest)
	if strings.Join(e.outbox.sent, ";") != "ws/chat:wrkGROUP1: hello group" {
		t.Fatalf("sent %v", e.outbox.sent)
	}
}
