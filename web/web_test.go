package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
)

// fakeBots is a Bots whose behaviour each test sets.
type fakeBots struct {
	list    func() []adapter.BotStatus
	refresh func(ctx context.Context, name string) (adapter.BotStatus, error)
}

var _ Bots = fakeBots{}

func (f fakeBots) Bots() []adapter.BotStatus { return f.list() }
func (f fakeBots) RefreshToken(ctx context.Context, name string) (adapter.BotStatus, error) {
	return f.refresh(ctx, name)
}

func newTestServer(t *testing.T, bots Bots) http.Handler {
	t.Helper()
	return newTestServerAt(t, bots, nil)
}

// newTestServerAt is newTestServer with the clock now (nil: time.Now).
func newTestServerAt(t *testing.T, bots Bots, now func() time.Time) http.Handler {
	t.Helper()
	gin.SetMode(gin.TestMode)
	e := gin.New()
	New(Options{Admin: AdminConfig{Username: "admin", Password: "s3cret-pw"}, Bots: bots, Metrics: http.NotFoundHandler(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now}).Routes(e)
	return e
}

func do(h http.Handler, method, path, user, pass string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAPIAuth(t *testing.T) {
	h := newTestServer(t, fakeBots{list: func() []adapter.BotStatus { return nil }})
	cases := []struct {
		name, method, path, user, pass string
		want                           int
	}{
		{"no credentials", "GET", "/api/bots", "", "", 401},
		{"wrong password", "GET", "/api/bots", "admin", "nope", 401},
		{"wrong user", "GET", "/api/bots", "root", "s3cret-pw", 401},
		{"password prefix", "GET", "/api/bots", "admin", "s3cret", 401},
		{"refresh without credentials", "POST", "/api/bots/x/token/refresh", "", "", 401},
		{"right credentials", "GET", "/api/bots", "admin", "s3cret-pw", 200},
		{"healthz needs none", "GET", "/healthz", "", "", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := do(h, c.method, c.path, c.user, c.pass)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, c.want, rec.Body)
			}
			if c.want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

func TestListBots(t *testing.T) {
	exp := time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))
	failing := adapter.ModelHealth{Model: "gpt-test", Host: "api.openai.com", KeySet: true, Endpoint: 1,
		State: adapter.ModelFailing, Cause: "bad_key", LastOKAt: exp.Add(-time.Hour),
		LastError: "llm: chat completion: status 401: Incorrect API key", Hint: "the model API refused the key: check llm.api_key"}
	h := newTestServerAt(t, fakeBots{list: func() []adapter.BotStatus {
		return []adapter.BotStatus{{
			Name: "helpdesk", CorpID: "ww1", AgentID: 1000002,
			Token: adapter.TokenStatus{State: adapter.TokenError, ExpiresAt: exp, FetchedAt: exp.Add(-2 * time.Hour),
				RefreshCount: 3, LastError: "wecom: gettoken: errcode 60020", Hint: "add 1.2.3.4", Source: adapter.SourceDatabase},
			LLM: failing,
		}, {Name: "cold", CorpID: "ww2", AgentID: 7, Token: adapter.TokenStatus{State: adapter.TokenNone},
			LLM: adapter.ModelHealth{Model: "qwen-plus", Host: "dashscope.aliyuncs.com", Endpoint: 2, State: adapter.ModelUnknown},
		}, {Name: "it", CorpID: "ww3", AgentID: 8, Token: adapter.TokenStatus{State: adapter.TokenNone}, LLM: failing}}
	}}, func() time.Time { return exp.Add(-30 * time.Minute) })
	rec := do(h, "GET", "/api/bots", "admin", "s3cret-pw")
	if strings.Contains(rec.Body.String(), "sk-") {
		t.Errorf("GET /api/bots shows a key: %s", rec.Body)
	}
	var out struct {
		Models []map[string]any `json:"models"`
		Bots   []struct {
			Name         string         `json:"name"`
			CorpID       string         `json:"corp_id"`
			AgentID      int64          `json:"agent_id"`
			CallbackPath string         `json:"callback_path"`
			Token        map[string]any `json:"token"`
			LLM          map[string]any `json:"llm"`
		} `json:"bots"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Bots) != 3 {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	b := out.Bots[0]
	if b.Name != "helpdesk" || b.CorpID != "ww1" || b.AgentID != 1000002 || b.CallbackPath != "/wecom/helpdesk/callback" {
		t.Fatalf("bot %+v", b)
	}
	want := map[string]any{
		"state": "error", "expires_at": "2026-11-25T02:00:00Z", "fetched_at": "2026-11-25T00:00:00Z",
		"expires_in": float64(1800), "refresh_count": float64(3), "last_error": "wecom: gettoken: errcode 60020", "hint": "add 1.2.3.4", "source": "database",
	}
	for k, v := range want {
		if b.Token[k] != v {
			t.Errorf("token.%s = %v, want %v", k, b.Token[k], v)
		}
	}
	if cold := out.Bots[1].Token; cold["expires_at"] != nil || cold["state"] != "none" {
		t.Errorf("a bot without a token: %v", cold)
	}
	// The model's health: exactly these fields, a contract with scripts.
	// A key that is set shows masked, as on the configuration page.
	wantLLM := map[string]any{
		"model": "gpt-test", "host": "api.openai.com", "api_key": "******",
		"state": "failing", "last_error": "llm: chat completion: status 401: Incorrect API key",
		"hint": "the model API refused the key: check llm.api_key", "last_ok_at": "2026-11-25T01:00:00Z",
	}
	if !maps.Equal(b.LLM, wantLLM) {
		t.Errorf("llm = %v, want %v", b.LLM, wantLLM)
	}
	wantCold := map[string]any{"model": "qwen-plus", "host": "dashscope.aliyuncs.com", "api_key": "",
		"state": "unknown", "last_error": "", "hint": "", "last_ok_at": nil}
	if cold := out.Bots[1].LLM; !maps.Equal(cold, wantCold) {
		t.Errorf("llm of a bot not called yet = %v, want %v", cold, wantCold)
	}
	// Each model endpoint once, with the bots calling it, which share
	// its health.
	if len(out.Models) != 2 {
		t.Fatalf("models = %v, want 2", out.Models)
	}
	for i, want := range []struct {
		llm  map[string]any
		bots []any
	}{{wantLLM, []any{"helpdesk", "it"}}, {wantCold, []any{"cold"}}} {
		got := maps.Clone(out.Models[i])
		bots, _ := got["bots"].([]any)
		delete(got, "bots")
		if !maps.Equal(got, want.llm) || !slices.Equal(bots, want.bots) {
			t.Errorf("models[%d] = %v, want %v with bots %v", i, out.Models[i], want.llm, want.bots)
		}
	}
}

func TestRefreshToken(t *testing.T) {
	var asked []string
	h := newTestServer(t, fakeBots{refresh: func(_ context.Context, name string) (adapter.BotStatus, error) {
		asked = append(asked, name)
		if name != "helpdesk" {
			return adapter.BotStatus{}, adapter.ErrUnknownBot
		}
		return adapter.BotStatus{Name: name, Token: adapter.TokenStatus{State: adapter.TokenValid, RefreshCount: 4}}, nil
	}})
	rec := do(h, "POST", "/api/bots/helpdesk/token/refresh", "admin", "s3cret-pw")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"refresh_count":4`) {
		t.Fatalf("refresh: %d %s", rec.Code, rec.Body)
	}
	rec = do(h, "POST", "/api/bots/nobody/token/refresh", "admin", "s3cret-pw")
	if rec.Code != 404 {
		t.Fatalf("unknown bot: %d %s", rec.Code, rec.Body)
	}
	if strings.Join(asked, ",") != "helpdesk,nobody" {
		t.Fatalf("refresh asked for %v", asked)
	}
	if rec := do(h, "GET", "/api/bots/helpdesk/token/refresh", "admin", "s3cret-pw"); rec.Code == 200 {
		t.Fatal("refresh must be a POST")
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

// TestListBotsKinds: an app's entry is as before plus its kind; an AI bot's
// has its mode and no token, and its connection only in websocket mode.
func TestListBotsKinds(t *testing.T) {
	e := newPanelEnv(t)
	e.withAIBots()
	rec := e.do(request{method: "GET", path: "/api/bots", header: map[string]string{"Authorization": basic(adminUser, adminPW)}})
	wantStatus(t, rec, 200)
	var out struct {
		Bots []map[string]json.RawMessage `json:"bots"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Bots) != 4 {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	keys := func(b map[string]json.RawMessage) string { return strings.Join(slices.Sorted(maps.Keys(b)), ",") }
	field := func(b map[string]json.RawMessage, k string) string { return string(b[k]) }

	app := out.Bots[0]
	if got := keys(app); got != "agent_id,callback_path,corp_id,kind,llm,name,token" {
		t.Errorf("an app's keys: %s", got)
	}
	if field(app, "kind") != `"app"` || field(app, "corp_id") != `"ww1"` || !strings.Contains(field(app, "token"), `"state":"valid"`) {
		t.Errorf("app entry: %s", rec.Body)
	}

	cb := out.Bots[2]
	if got := keys(cb); got != "agent_id,callback_path,corp_id,kind,llm,mode,name" {
		t.Errorf("a callback AI bot's keys: %s (no token, no connection)", got)
	}
	if field(cb, "kind") != `"aibot"` || field(cb, "mode") != `"callback"` || field(cb, "corp_id") != `""` ||
		field(cb, "agent_id") != "0" || field(cb, "callback_path") != `"/wecom/assistant/callback"` {
		t.Errorf("callback AI bot entry: %v", cb)
	}

	ws := out.Bots[3]
	if got := keys(ws); got != "agent_id,callback_path,connection,corp_id,kind,llm,mode,name" {
		t.Errorf("a websocket AI bot's keys: %s", got)
	}
	if field(ws, "mode") != `"websocket"` {
		t.Errorf("mode %s", field(ws, "mode"))
	}
	var conn map[string]any
	must(t, json.Unmarshal(ws["connection"], &conn))
	wantConn := map[string]any{"state": "error", "since": "2026-03-02T02:20:00Z", "reconnects": float64(2),
		"last_error": "aibot: subscribe refused: errcode 40001: invalid secret"}
	if !maps.Equal(conn, wantConn) {
		t.Errorf("connection = %v, want %v", conn, wantConn)
	}
}

func basic(user, pass string) string {
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// The token refresh of an AI bot, which has none, and a send through a
// bot that can only answer are the admin's mistakes: 409 with a reason.
func TestNotAppAndCannotSend(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{adapter.ErrNotApp, "this bot is an AI bot: it has no access token"},
		{adapter.ErrCannotSend, "this bot can only answer messages"},
	} {
		status, key := statusOf(fmt.Errorf("wrapped: %w", c.err))
		if status != http.StatusConflict || !strings.HasPrefix(loadDicts()[langEN][key], c.want) {
			t.Errorf("%v: %d %q", c.err, status, key)
		}
	}
	e := newPanelEnv(t)
	e.withAIBots()
	for _, name := range []string{aiCallbackBot, aiWSBot} {
		rec := e.do(request{method: "POST", path: "/api/bots/" + name + "/token/refresh", header: map[string]string{"Authorization": basic(adminUser, adminPW)}})
		wantStatus(t, rec, http.StatusConflict)
		wantBody(t, rec, `{"error":"this bot is an AI bot: it has no access token"}`)
	}
	s := e.login()
	rec := e.post("/admin/bots/"+aiWSBot+"/token/refresh", s, nil)
	wantStatus(t, rec, http.StatusConflict)
	wantBody(t, rec, "this bot is an AI bot: it has no access token")

	e.outbox.sendErr = adapter.ErrCannotSend
	rec = e.post("/admin/send", s, url.Values{"bot": {aiCallbackBot}, "user": {"wangwu"}, "text": {"hello"}})
	wantStatus(t, rec, http.StatusConflict)
	wantBody(t, rec, "an AI bot in callback mode cannot send first")
}
