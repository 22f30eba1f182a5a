package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
		LLM: adapter.ModelHealth{Model: "gpt-test", Host: "api.example.com", KeySet: true, State: adapter.ModelOK, LastOKAt: t0.Add(-5 * time.Minute)},
	}, {
		Name: "sales", CorpID: "ww1", AgentID: 1000003,
		Token: adapter.TokenStatus{State: adapter.TokenError, RefreshCount: 1,
			LastError: "wecom: gettoken: errcode 60020: not allow to access from your ip, from ip: 203.0.113.7",
			Hint:      "WeCom refuses calls from IP 203.0.113.7: add it to the app's trusted IPs (企业可信IP) in the admin console."},
		LLM: adapter.ModelHealth{Model: "gpt-test", State: adapter.ModelFailing, Cause: "unreachable",
			LastError: "llm: chat completion stream: dial tcp: lookup api.example.invalid: no such host", Hint: "check llm.base_url"},
	}}
	e.report = ConfigReport{Text: "admin:\n  username: admin\n  password: '******'\n", Problems: []string{"config: llm.model: is empty"}}
	bots := fakeBots{
		list: func() []adapter.BotStatus { return e.bots },
		refresh: func(_ context.Context, name string) (adapter.BotStatus, error) {
			e.refreshed = append(e.refreshed, name)
			for i, b := range e.bots {
				if b.Name == name && isAIBot(b) {
					return adapter.BotStatus{}, adapter.ErrNotApp
				}
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
	// files, when set, makes the form multipart with these files (by
	// field name).
	files map[string][]byte
}

func (e *panelEnv) do(r request) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	contentType := "application/x-www-form-urlencoded"
	switch {
	case r.files != nil:
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for k, vs := range r.form {
			for _, v := range vs {
				_ = mw.WriteField(k, v)
			}
		}
		for k, data := range r.files {
			fw, _ := mw.CreateFormFile(k, k+".bin")
			_, _ = fw.Write(data)
		}
		_ = mw.Close()
		body, contentType = &buf, mw.FormDataContentType()
	case r.form != nil:
		body = strings.NewReader(r.form.Encode())
	}
	req := httptest.NewRequest(r.method, "http://example.com"+r.path, body)
	if r.form != nil || r.files != nil {
		req.Header.Set("Content-Type", contentType)
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

// Two AI bots beside the apps: "assistant" answers callbacks; "ws" is on
// the long connection, which WeCom refuses (a wrong secret).
const (
	aiCallbackBot  = "assistant"
	aiWSBot        = "ws"
	aiResponseCode = "RESPONSE-CODE-never-shown"
)

func (e *panelEnv) withAIBots() {
	e.bots = append(e.bots, adapter.BotStatus{
		Name: aiCallbackBot, Kind: adapter.KindAIBot, Mode: adapter.ModeCallback,
		LLM: adapter.ModelHealth{Model: "gpt-test", State: adapter.ModelUnknown},
	}, adapter.BotStatus{
		Name: aiWSBot, Kind: adapter.KindAIBot, Mode: adapter.ModeWebSocket,
		Connection: &adapter.ConnectionStatus{State: "error", Since: t0.Add(-10 * time.Minute), Reconnects: 2,
			LastError: "aibot: subscribe refused: errcode 40001: invalid secret", Holder: true},
		LLM: adapter.ModelHealth{Model: "gpt-test", State: adapter.ModelOK, LastOKAt: t0.Add(-time.Minute)},
	})
}

// seedAIBot stores three answered messages of the callback AI bot, each
// with its stream: a single chat the user found accurate, a group chat
// found inaccurate with a note, and one whose verdict was withdrawn.
func (e *panelEnv) seedAIBot() (single, group, withdrawn int64) {
	e.t.Helper()
	ctx := e.t.Context()
	msg := func(user, key, content string, feedback storage.AIBotFeedback) int64 {
		m := &storage.Message{Bot: aiCallbackBot, DedupeKey: key, UserID: user, MsgType: "text", Content: content}
		_, err := e.db.InsertMessage(ctx, m)
		must(e.t, err)
		_, _, err = e.db.CreateAIBotStream(ctx, storage.AIBotStream{Bot: aiCallbackBot, StreamID: "s" + key, MessageID: m.ID,
			FeedbackID: "f" + key, ResponseURL: "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=" + aiResponseCode})
		must(e.t, err)
		_, err = e.db.SetAIBotFeedback(ctx, aiCallbackBot, "f"+key, feedback)
		must(e.t, err)
		e.now = e.now.Add(time.Minute)
		return m.ID
	}
	single = msg("wangwu", "a1", "what is the VPN address?", storage.AIBotFeedback{Type: 1, At: t0.Add(5 * time.Minute)})
	group = msg("chat:wrkGROUP1", "a2", "when is the holiday?", storage.AIBotFeedback{Type: 2, Note: "wrong dates", At: t0.Add(6 * time.Minute)})
	withdrawn = msg("wangwu", "a3", "thanks", storage.AIBotFeedback{Type: 3, At: t0.Add(7 * time.Minute)})
	return single, group, withdrawn
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
