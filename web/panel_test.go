package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin whatever the machine has
)

// TestEveryPageRenders renders every page in both languages: no template
// error, no untranslated key, no external resource, the admin password
// never shown.
func TestEveryPageRenders(t *testing.T) {
	e := newChatEnv(t, &fakeSimulator{chat: echoTrace})
	e.withAIBots()
	e.seed()
	e.seedAIBot()
	s := e.login()
	// A chat, so its trace is rendered too.
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"lisi"}, "text": {"hi"}}), http.StatusSeeOther)
	key := regexp.MustCompile(`\b(nav|login|count|chart|bots|state|source|users|conv|role|filter|status|msg|part|send|chat|config|error|flash|footer|kind|mode|conn|feedback)\.[a-z_0-9]+\b`)
	pages := []string{"/admin/", "/admin/conversations", "/admin/conversations/helpdesk/lisi", "/admin/messages",
		"/admin/conversations/assistant/chat:wrkGROUP1",
		"/admin/send", "/admin/chat", "/admin/config", "/admin/messages?flash=resent", "/admin/login?flash=logged_out"}
	for _, lang := range []string{"zh", "en"} {
		for _, p := range pages {
			r := request{method: "GET", path: p, header: map[string]string{"Accept-Language": lang}}
			if !strings.HasPrefix(p, "/admin/login") {
				r.cookie = s
			}
			rec := e.do(r)
			wantStatus(t, rec, 200)
			body := rec.Body.String()
			if k := key.FindString(body); k != "" && !strings.Contains(body, "errcode") {
				t.Errorf("%s %s: untranslated %q", lang, p, k)
			}
			if !strings.Contains(body, "/admin/static/app.css?v=") || !strings.Contains(body, `<meta name="viewport"`) {
				t.Errorf("%s %s: no stylesheet or viewport", lang, p)
			}
		}
	}
	for _, r := range e.responses {
		if strings.Contains(r, adminPW) {
			t.Fatalf("the admin password appears in a response:\n%s", r)
		}
	}
}

func TestStaticAssets(t *testing.T) {
	e := newPanelEnv(t)
	for _, f := range []string{"app.css", "app.js"} {
		rec := e.get("/admin/static/"+f+"?v=x", "")
		wantStatus(t, rec, 200)
		if rec.Body.Len() < 100 {
			t.Errorf("%s: %d bytes", f, rec.Body.Len())
		}
	}
	wantStatus(t, e.get("/admin/static/", ""), 404)
	wantStatus(t, e.get("/admin/static/nope.js", ""), 404)
}

// TestPanelZoneLabel: the footer names the panel's time zone as it is on
// the panel's clock's day: summer time in July, not in January.
func TestPanelZoneLabel(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	e := newPanelEnv(t, func(o *Options) { o.Location = berlin })
	for _, c := range []struct {
		now  time.Time
		want string
	}{
		{time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), "CET (&#43;01:00)"}, // "+" escaped by html/template
		{time.Date(2026, 7, 15, 12, 0, 0, 0, time.UTC), "CEST (&#43;02:00)"},
	} {
		e.now = c.now
		if body := e.get("/admin/", e.login()).Body.String(); !strings.Contains(body, c.want) {
			t.Errorf("on %s the footer does not say %s: %.300s", c.now.Format(time.DateOnly), c.want, body[max(0, strings.Index(body, "<footer")):])
		}
	}
}
