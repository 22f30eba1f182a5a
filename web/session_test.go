package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Every page and action, as the table of what needs a session.
var panelRoutes = []struct{ method, path string }{
	{"GET", "/admin/"},
	{"POST", "/admin/bots/helpdesk/token/refresh"},
	{"GET", "/admin/conversations"},
	{"GET", "/admin/conversations/helpdesk/zhangsan"},
	{"POST", "/admin/conversations/helpdesk/zhangsan/reset"},
	{"GET", "/admin/messages?status=failed"},
	{"POST", "/admin/messages/1/resend"},
	{"GET", "/admin/send"},
	{"POST", "/admin/send"},
	{"GET", "/admin/config"},
}

func TestPanelNeedsASession(t *testing.T) {
	e := newPanelEnv(t)
	e.seed()
	expired := e.login()
	e.now = e.now.Add(12 * time.Hour) // sessions last 12h
	for _, r := range panelRoutes {
		for name, cookie := range map[string]string{"no session": "", "unknown session": "forged", "expired session": expired} {
			t.Run(r.method+" "+r.path+" "+name, func(t *testing.T) {
				rec := e.do(request{method: r.method, path: r.path, cookie: cookie, form: url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"x"}}})
				next := "/admin/"
				if r.method == "GET" {
					next = r.path
				}
				wantRedirect(t, rec, "/admin/login?next="+url.QueryEscape(next))
			})
		}
	}
	if len(e.refreshed) > 0 || len(e.outbox.sent) > 0 || len(e.outbox.resent) > 0 {
		t.Fatalf("an action ran without a session: refreshed %v, sent %v, resent %v", e.refreshed, e.outbox.sent, e.outbox.resent)
	}
	// /admin itself goes to /admin/ (gin), then to the login.
	if rec := e.get("/admin", ""); rec.Code != http.StatusMovedPermanently || !strings.HasSuffix(rec.Header().Get("Location"), "/admin/") {
		t.Fatalf("/admin: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	// The JSON API answers 401, not a redirect.
	rec := e.do(request{method: "GET", path: "/api/bots"})
	wantStatus(t, rec, http.StatusUnauthorized)
	rec = e.do(request{method: "GET", path: "/api/bots", cookie: e.login()})
	wantStatus(t, rec, http.StatusUnauthorized) // a panel session is not API auth
}

func TestLogin(t *testing.T) {
	e := newPanelEnv(t)
	rec := e.get("/admin/login?next=%2Fadmin%2Fmessages", "")
	wantStatus(t, rec, 200)
	wantBody(t, rec, `name="password"`, `value="/admin/messages"`)

	rec = e.post("/admin/login", "", url.Values{"username": {adminUser}, "password": {"nope"}, "next": {"/admin/messages"}})
	wantStatus(t, rec, http.StatusUnauthorized)
	wantBody(t, rec, "Wrong username or password.", `value="admin"`)
	if len(rec.Result().Cookies()) != 0 {
		t.Fatalf("a failed login set cookies: %v", rec.Result().Cookies())
	}
	rec = e.post("/admin/login", "", url.Values{"username": {"root"}, "password": {adminPW}})
	wantStatus(t, rec, http.StatusUnauthorized)

	rec = e.post("/admin/login", "", url.Values{"username": {adminUser}, "password": {adminPW}, "next": {"/admin/messages"}})
	wantRedirect(t, rec, "/admin/messages")
	ck := rec.Result().Cookies()
	if len(ck) != 1 || ck[0].Name != sessionCookie || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode ||
		ck[0].Secure || ck[0].Path != "/admin/" || len(ck[0].Value) < 40 || ck[0].MaxAge != 12*3600 {
		t.Fatalf("session cookie %+v", ck)
	}
	wantStatus(t, e.get("/admin/", ck[0].Value), 200)
	// A logged-in admin is sent on from the login page.
	wantRedirect(t, e.get("/admin/login", ck[0].Value), "/admin/")

	t.Run("secure under TLS or behind a TLS proxy", func(t *testing.T) {
		for _, r := range []request{{tls: true}, {header: map[string]string{"X-Forwarded-Proto": "https"}}} {
			r.method, r.path = "POST", "/admin/login"
			r.form = url.Values{"username": {adminUser}, "password": {adminPW}}
			rec := e.do(r)
			if c := rec.Result().Cookies(); rec.Code != 303 || len(c) != 1 || !c[0].Secure || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
				t.Fatalf("%d %+v", rec.Code, c)
			}
		}
	})
	t.Run("next never leaves the panel", func(t *testing.T) {
		for _, next := range []string{"//evil.example/admin/", "https://evil.example/admin/", "/elsewhere", `/admin/\evil`, "javascript:alert(1)"} {
			rec := e.post("/admin/login", "", url.Values{"username": {adminUser}, "password": {adminPW}, "next": {next}})
			wantRedirect(t, rec, "/admin/")
		}
	})
}

func TestLogoutAndExpiry(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	e.now = e.now.Add(11 * time.Hour)
	wantStatus(t, e.get("/admin/", s), 200)
	rec := e.post("/admin/logout", s, nil)
	wantRedirect(t, rec, "/admin/login?flash=logged_out")
	if c := rec.Result().Cookies(); len(c) != 1 || c[0].Name != sessionCookie || c[0].MaxAge >= 0 {
		t.Fatalf("logout cookie %+v", c)
	}
	wantRedirect(t, e.get("/admin/", s), "/admin/login?next=%2Fadmin%2F")
	wantBody(t, e.get("/admin/login?flash=logged_out", ""), "Logged out.")

	s = e.login()
	e.now = e.now.Add(12*time.Hour - time.Second)
	wantStatus(t, e.get("/admin/", s), 200)
	e.now = e.now.Add(time.Second)
	wantRedirect(t, e.get("/admin/config", s), "/admin/login?next=%2Fadmin%2Fconfig")
}
