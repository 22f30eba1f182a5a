package web

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin whatever the machine has

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

const (
	adminUser = "admin"
	adminPW   = "panel-PASSWORD-never-shown"
)

// fakeOutbox records what the panel asks the outbox to do.
type fakeOutbox struct {
	sent      []string
	resent    []int64
	sendErr   error
	resendErr error
}

var _ Outbox = (*fakeOutbox)(nil)

func (f *fakeOutbox) Send(_ context.Context, bot, user, text string) error {
	if f.sendErr != nil {
		return f.sendErr
	}
	f.sent = append(f.sent, bot+"/"+user+": "+text)
	return nil
}

func (f *fakeOutbox) Resend(_ context.Context, id int64) error {
	if f.resendErr != nil {
		return f.resendErr
	}
	f.resent = append(f.resent, id)
	return nil
}

var _ Store = (*storage.DB)(nil)

// panelEnv is the admin server over a real database, with the WeCom side
// and the outbox faked at their interfaces.
type panelEnv struct {
	t         *testing.T
	h         http.Handler
	srv       *Server
	db        *storage.DB
	now       time.Time
	bots      []adapter.BotStatus
	refreshed []string
	outbox    *fakeOutbox
	report    ConfigReport
	// responses are every body the server wrote, for the secrets check.
	responses []string
}

// t0 is 10:30 in Shanghai, the panel's time zone in these tests.
var t0 = time.Date(2026, 3, 2, 2, 30, 0, 0, time.UTC)

// newPanelEnv starts the panel; with, if given, adds to its options.
func newPanelEnv(t *testing.T, with ...func(*Options)) *panelEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	db, err := storage.Open(t.Context(), storage.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "p.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &panelEnv{t: t, db: db, now: t0, outbox: &fakeOutbox{}}
	db.Now = func() time.Time { return e.now }
	e.bots = []adapter.BotStatus{{
		Name: "helpdesk", CorpID: "ww1", AgentID: 1000002,
		Token: adapter.TokenStatus{State: adapter.TokenValid, ExpiresAt: t0.Add(90 * time.Minute), FetchedAt: t0.Add(-30 * time.Minute),
			RefreshCount: 3, Source: adapter.SourceGettoken},
	}, {
		Name: "sales", CorpID: "ww1", AgentID: 1000003,
		Token: adapter.TokenStatus{State: adapter.TokenError, RefreshCount: 1,
			LastError: "wecom: gettoken: errcode 60020: not allow to access from your ip, from ip: 203.0.113.7",
			Hint:      "WeCom refuses calls from IP 203.0.113.7: add it to the app's trusted IPs (企业可信IP) in the admin console."},
	}}
	e.report = ConfigReport{Text: "admin:\n  username: admin\n  password: '******'\n", Problems: []string{"config: llm.model: is empty"}}
	bots := fakeBots{
		list: func() []adapter.BotStatus { return e.bots },
		refresh: func(_ context.Context, name string) (adapter.BotStatus, error) {
			e.refreshed = append(e.refreshed, name)
			for i, b := range e.bots {
				if b.Name == name {
					e.bots[i].Token.RefreshCount++
					return e.bots[i], nil
				}
			}
			return adapter.BotStatus{}, adapter.ErrUnknownBot
		},
	}
	shanghai := time.FixedZone("CST", 8*3600)
	engine := gin.New()
	o := Options{
		Admin: AdminConfig{Username: adminUser, Password: adminPW}, Bots: bots, Outbox: e.outbox, Store: db,
		Config: func() ConfigReport { return e.report }, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return e.now }, Location: shanghai,
	}
	for _, f := range with {
		f(&o)
	}
	e.srv = New(o)
	e.srv.Routes(engine)
	e.h = engine
	return e
}

// request is one request to the panel, as a browser on the same site sends it.
type request struct {
	method, path string
	form         url.Values
	cookie       string // session id
	header       map[string]string
	ip           string
	tls          bool
}

func (e *panelEnv) do(r request) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	}
	req := httptest.NewRequest(r.method, "http://example.com"+r.path, body)
	if r.form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.method == http.MethodPost {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Origin", "http://example.com")
	}
	req.Header.Set("Accept-Language", "en")
	for k, v := range r.header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: r.cookie})
	}
	if r.ip != "" {
		req.RemoteAddr = r.ip + ":4321"
	}
	if r.tls {
		req.TLS = &tls.ConnectionState{}
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	e.responses = append(e.responses, rec.Header().Get("Location")+"\n"+strings.Join(rec.Header().Values("Set-Cookie"), "\n")+"\n"+rec.Body.String())
	return rec
}

func (e *panelEnv) get(path, session string) *httptest.ResponseRecorder {
	return e.do(request{method: http.MethodGet, path: path, cookie: session})
}

func (e *panelEnv) post(path, session string, form url.Values) *httptest.ResponseRecorder {
	if form == nil {
		form = url.Values{}
	}
	return e.do(request{method: http.MethodPost, path: path, cookie: session, form: form})
}

// login logs in and returns the session id.
func (e *panelEnv) login() string {
	e.t.Helper()
	rec := e.post("/admin/login", "", url.Values{"username": {adminUser}, "password": {adminPW}})
	if rec.Code != http.StatusSeeOther {
		e.t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			return c.Value
		}
	}
	e.t.Fatal("login set no session cookie")
	return ""
}

func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; location %q; body:\n%s", rec.Code, status, rec.Header().Get("Location"), rec.Body)
	}
}

func wantRedirect(t *testing.T, rec *httptest.ResponseRecorder, location string) {
	t.Helper()
	wantStatus(t, rec, http.StatusSeeOther)
	if got := rec.Header().Get("Location"); got != location {
		t.Fatalf("redirect to %q, want %q", got, location)
	}
}

func wantBody(t *testing.T, rec *httptest.ResponseRecorder, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(rec.Body.String(), p) {
			t.Errorf("body lacks %q:\n%s", p, rec.Body)
		}
	}
}

// seed stores a few messages of helpdesk's users: answered, failed, pending.
func (e *panelEnv) seed() (answered, failed, pending int64) {
	e.t.Helper()
	ctx := e.t.Context()
	msg := func(user, key, content string) int64 {
		m := &storage.Message{Bot: "helpdesk", DedupeKey: key, UserID: user, MsgType: "text", Content: content}
		if _, err := e.db.InsertMessage(ctx, m); err != nil {
			e.t.Fatal(err)
		}
		return m.ID
	}
	answered = msg("zhangsan", "1", "你好")
	must(e.t, e.db.SaveAnswer(ctx, storage.Answer{MessageID: answered, Bot: "helpdesk", UserID: "zhangsan",
		UserTurn: "你好", AssistantTurn: "您好！有什么可以帮您？"}))
	e.now = e.now.Add(time.Minute)
	failed = msg("lisi", "2", "report please")
	must(e.t, e.db.SaveAnswer(ctx, storage.Answer{MessageID: failed, Bot: "helpdesk", UserID: "lisi", Parts: []string{"the report"}}))
	parts, err := e.db.DueParts(ctx, e.now, 10)
	must(e.t, err)
	must(e.t, e.db.FailPart(ctx, parts[0].ID, "wecom: message/send: errcode 40003: invalid userid"))
	e.now = e.now.Add(time.Minute)
	pending = msg("lisi", "3", "still there?")
	return answered, failed, pending
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

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

func TestLoginThrottle(t *testing.T) {
	e := newPanelEnv(t)
	try := func(ip, pw string) *httptest.ResponseRecorder {
		return e.do(request{method: "POST", path: "/admin/login", ip: ip, form: url.Values{"username": {adminUser}, "password": {pw}}})
	}
	for i := range throttleFree {
		if rec := try("198.51.100.9", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i+1, rec.Code)
		}
	}
	// Now even the right password waits, and says how long.
	rec := try("198.51.100.9", adminPW)
	wantStatus(t, rec, http.StatusTooManyRequests)
	wantBody(t, rec, "Too many failed attempts")
	if rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q, want 1", rec.Header().Get("Retry-After"))
	}
	// The JSON API shares the throttle.
	req := httptest.NewRequest("GET", "/api/bots", nil)
	req.RemoteAddr = "198.51.100.9:1"
	req.SetBasicAuth(adminUser, adminPW)
	api := httptest.NewRecorder()
	e.h.ServeHTTP(api, req)
	wantStatus(t, api, http.StatusTooManyRequests)
	// Another address is not slowed down.
	wantStatus(t, try("198.51.100.10", adminPW), http.StatusSeeOther)

	// Each further failure doubles the wait.
	e.now = e.now.Add(time.Second)
	wantStatus(t, try("198.51.100.9", "guess"), http.StatusUnauthorized)
	rec = try("198.51.100.9", adminPW)
	wantStatus(t, rec, http.StatusTooManyRequests)
	if rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("Retry-After %q, want 2", rec.Header().Get("Retry-After"))
	}
	e.now = e.now.Add(2 * time.Second)
	wantStatus(t, try("198.51.100.9", adminPW), http.StatusSeeOther)
	// A success forgets the failures.
	wantStatus(t, try("198.51.100.9", "guess"), http.StatusUnauthorized)
	wantStatus(t, try("198.51.100.9", adminPW), http.StatusSeeOther)
}

func TestThrottleForgetsAndCaps(t *testing.T) {
	now := t0
	th := newThrottle(func() time.Time { return now })
	for range 40 {
		th.fail("a")
	}
	if w := th.wait("a"); w != throttleMaxDelay {
		t.Fatalf("wait after 40 failures %v, want %v", w, throttleMaxDelay)
	}
	now = now.Add(throttleForget)
	if w := th.wait("a"); w != 0 {
		t.Fatalf("wait after %v quiet: %v", throttleForget, w)
	}
	th.fail("a")
	if w := th.wait("a"); w != 0 {
		t.Fatalf("the count restarted, yet wait %v", w)
	}
}

func TestThrottleTableStaysBounded(t *testing.T) {
	now := t0
	th := newThrottle(func() time.Time { return now })
	for i := range throttleSweepAt {
		th.fail(itoa(int64(i)))
	}
	// All recent: the sweep keeps them and the next one waits for the table
	// to double.
	th.fail("fresh")
	if n := len(th.byIP); n != throttleSweepAt+1 {
		t.Fatalf("%d IPs after a sweep of recent ones, want %d", n, throttleSweepAt+1)
	}
	now = now.Add(throttleForget)
	for i := range throttleSweepAt {
		th.fail("later" + itoa(int64(i)))
	}
	if n := len(th.byIP); n > 2*throttleSweepAt+2 {
		t.Fatalf("%d IPs: the forgotten ones were never swept", n)
	}
	if _, ok := th.byIP["0"]; ok {
		t.Fatal("an IP forgotten long ago is still in the table")
	}
}

func TestCrossSiteRequestsRefused(t *testing.T) {
	e := newPanelEnv(t)
	_, failed, _ := e.seed()
	s := e.login()
	forms := map[string]url.Values{"/admin/send": {"bot": {"helpdesk"}, "user": {"zhangsan"}, "text": {"hi"}}}
	attacks := map[string]map[string]string{
		"Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		"Sec-Fetch-Site same-site":  {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.example.com"},
		"foreign Origin only":       {"Sec-Fetch-Site": "", "Origin": "https://evil.example"},
	}
	paths := []string{"/admin/bots/helpdesk/token/refresh", "/admin/conversations/helpdesk/zhangsan/reset",
		"/admin/messages/" + itoa(failed) + "/resend", "/admin/send", "/admin/logout", "/admin/login"}
	for name, h := range attacks {
		for _, p := range paths {
			t.Run(name+" "+p, func(t *testing.T) {
				form := forms[p]
				if form == nil {
					form = url.Values{"username": {adminUser}, "password": {adminPW}}
				}
				rec := e.do(request{method: "POST", path: p, cookie: s, form: form, header: h})
				wantStatus(t, rec, http.StatusForbidden)
				wantBody(t, rec, "cross-origin request refused")
			})
		}
	}
	api := e.do(request{method: "POST", path: "/api/bots/helpdesk/token/refresh", header: map[string]string{"Sec-Fetch-Site": "cross-site"}})
	wantStatus(t, api, http.StatusForbidden)
	if len(e.refreshed) > 0 || len(e.outbox.sent) > 0 || len(e.outbox.resent) > 0 {
		t.Fatalf("a cross-site request acted: refreshed %v, sent %v, resent %v", e.refreshed, e.outbox.sent, e.outbox.resent)
	}
	turns, err := e.db.Conversation(t.Context(), "helpdesk", "zhangsan", 0)
	if err != nil || len(turns) != 2 {
		t.Fatalf("the conversation was touched: %v %v", turns, err)
	}
	// The session still works, and same-origin posts (and scripts, which
	// send neither header) pass.
	wantRedirect(t, e.post("/admin/bots/helpdesk/token/refresh", s, nil), "/admin/?flash=token_refreshed")
	rec := e.do(request{method: "POST", path: "/admin/bots/helpdesk/token/refresh", cookie: s,
		header: map[string]string{"Sec-Fetch-Site": "", "Origin": ""}})
	wantStatus(t, rec, http.StatusSeeOther)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestDashboard(t *testing.T) {
	e := newPanelEnv(t)
	e.seed()
	// Yesterday's message (Shanghai time) is not today's.
	old := &storage.Message{Bot: "helpdesk", DedupeKey: "old", UserID: "u", MsgType: "text", ReceivedAt: t0.Add(-11 * time.Hour)}
	_, err := e.db.InsertMessage(t.Context(), old)
	must(t, err)
	s := e.login()
	rec := e.get("/admin/", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec,
		`id="bot-helpdesk"`, "http://example.com/wecom/helpdesk/callback", `class="badge state-valid"`, ">valid<",
		`data-seconds="5280"`, "1:28:00", // 90 min after t0, and the page is rendered 2 min later
		"2026-03-02 10:00:00", // fetched at, in Shanghai time
		`<dd class="refresh-count">3</dd>`, "from gettoken",
		`id="bot-sales"`, ">error<", "errcode 60020", "add it to the app&#39;s trusted IPs (企业可信IP)", "203.0.113.7",
		`id="count-received">3<`, `id="count-answered">1<`, `id="count-failed">1<`, `id="count-pending">1<`,
		"<svg", `class="bar-msg"`, "10:00 — 3 messages, 1 answers", "messages (4)", "answers (1)",
		"Refresh token", `action="/admin/bots/helpdesk/token/refresh"`,
	)
	if strings.Contains(rec.Body.String(), "http://") && regexp.MustCompile(`(src|href)="https?://`).MatchString(rec.Body.String()) {
		t.Fatal("the dashboard loads something from another site")
	}
	if h := rec.Header().Get("Content-Security-Policy"); !strings.Contains(h, "default-src 'self'") || !strings.Contains(h, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", h)
	}
	// Behind a TLS proxy the callback URL is https.
	rec = e.do(request{method: "GET", path: "/admin/", cookie: s, header: map[string]string{"X-Forwarded-Proto": "https"}})
	wantBody(t, rec, "https://example.com/wecom/helpdesk/callback")

	rec = e.post("/admin/bots/helpdesk/token/refresh", s, nil)
	wantRedirect(t, rec, "/admin/?flash=token_refreshed")
	rec = e.get("/admin/?flash=token_refreshed", s)
	wantBody(t, rec, `<dd class="refresh-count">4</dd>`, "Token refreshed.")
	rec = e.post("/admin/bots/nobody/token/refresh", s, nil)
	wantStatus(t, rec, http.StatusNotFound)
	wantBody(t, rec, "unknown bot")
	if strings.Join(e.refreshed, ",") != "helpdesk,nobody" {
		t.Fatalf("refreshed %v", e.refreshed)
	}
}

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

func TestConfigPage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	rec := e.get("/admin/config", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, "password: &#39;******&#39;", "The configuration has 1 problem(s):", "config: llm.model: is empty")
	e.report.Problems = nil
	wantBody(t, e.get("/admin/config", s), `id="check-ok"`, "Configuration OK.")
}

func TestLanguage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	page := func(lang, cookie string) string {
		h := map[string]string{"Accept-Language": lang}
		r := request{method: "GET", path: "/admin/", cookie: s, header: h}
		if cookie != "" {
			r.header["Cookie"] = sessionCookie + "=" + s + "; " + langCookie + "=" + cookie
			r.cookie = ""
		}
		rec := e.do(r)
		wantStatus(t, rec, 200)
		return rec.Body.String()
	}
	cases := []struct{ accept, cookie, want string }{
		{"zh-CN,zh;q=0.9,en;q=0.8", "", "刷新令牌"},
		{"en-US,en;q=0.9", "", "Refresh token"},
		{"fr-FR, en;q=0.5, zh;q=0.4", "", "Refresh token"},
		{"de", "", "刷新令牌"}, // neither: Chinese
		{"", "", "刷新令牌"},
		{"en", "zh", "刷新令牌"}, // the switch wins
		{"zh", "en", "Refresh token"},
		{"zh", "fr", "刷新令牌"},
	}
	for _, c := range cases {
		if got := page(c.accept, c.cookie); !strings.Contains(got, c.want) {
			t.Errorf("Accept-Language %q, cookie %q: no %q", c.accept, c.cookie, c.want)
		}
	}
	rec := e.get("/admin/messages?status=failed&lang=en", s)
	wantRedirect(t, rec, "/admin/messages?status=failed")
	if c := rec.Result().Cookies(); len(c) != 1 || c[0].Name != langCookie || c[0].Value != "en" || !c[0].HttpOnly {
		t.Fatalf("language cookie %+v", c)
	}
	wantBody(t, e.get("/admin/", s), `href="/admin/?lang=zh"`, `href="/admin/?lang=en"`)
}

// TestEveryPageRenders renders every page in both languages: no template
// error, no untranslated key, no external resource, the admin password
// never shown.
func TestEveryPageRenders(t *testing.T) {
	e := newChatEnv(t, &fakeSimulator{chat: echoTrace})
	e.seed()
	s := e.login()
	// A chat, so its trace is rendered too.
	wantStatus(t, e.post("/admin/chat", s, url.Values{"bot": {"helpdesk"}, "user": {"lisi"}, "text": {"hi"}}), http.StatusSeeOther)
	key := regexp.MustCompile(`\b(nav|login|count|chart|bots|state|source|users|conv|role|filter|status|msg|part|send|chat|config|error|flash|footer)\.[a-z_]+\b`)
	pages := []string{"/admin/", "/admin/conversations", "/admin/conversations/helpdesk/lisi", "/admin/messages",
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

func TestDictionariesMatch(t *testing.T) {
	d := loadDicts()
	for k := range d[langEN] {
		if _, ok := d[langZH][k]; !ok {
			t.Errorf("zh lacks %q", k)
		}
	}
	for k := range d[langZH] {
		if _, ok := d[langEN][k]; !ok {
			t.Errorf("en lacks %q", k)
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

func TestStorageFailureIsA500(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	e.db.Close()
	for _, p := range []string{"/admin/", "/admin/conversations", "/admin/messages", "/admin/send"} {
		rec := e.get(p, s)
		wantStatus(t, rec, http.StatusInternalServerError)
		wantBody(t, rec, "internal error")
		if strings.Contains(rec.Body.String(), "sql") {
			t.Errorf("%s shows the database error: %s", p, rec.Body)
		}
	}
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
