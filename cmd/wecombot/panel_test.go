package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
)

func TestMaskedConfig(t *testing.T) {
	keys := [2]string{wecomsim.NewEncodingAESKey(), wecomsim.NewEncodingAESKey()}
	yml := fmt.Sprintf(`
llm: {base_url: "https://proxyuser:PROXY-PW-secret@llm.example/v1", api_key: SK-LLM-secret}
admin: {username: boss, password: ADMIN-PW-secret}
bots:
  - {name: helpdesk, corp_id: wwcorp1, agent_id: 1000002, secret: APP-SECRET-1, token: CB-TOKEN-1, encoding_aes_key: %s}
  - {name: sales, corp_id: wwcorp1, agent_id: 1000003, secret: APP-SECRET-2, token: CB-TOKEN-2, encoding_aes_key: %s}
`, keys[0], keys[1])
	cfg, err := ParseConfig([]byte(yml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := panelConfig(cfg, false)
	for _, s := range []string{"PROXY-PW-secret", "SK-LLM-secret", "ADMIN-PW-secret", "APP-SECRET-1", "APP-SECRET-2",
		"CB-TOKEN-1", "CB-TOKEN-2", keys[0], keys[1]} {
		if strings.Contains(r.Text, s) {
			t.Errorf("the masked configuration shows %q:\n%s", s, r.Text)
		}
	}
	if n := strings.Count(r.Text, "'******'"); n != 8 {
		t.Errorf("%d masked values, want 8 (2×secret, token, encoding_aes_key; api_key; password):\n%s", n, r.Text)
	}
	for _, s := range []string{"username: boss", "name: helpdesk", "corp_id: wwcorp1", "agent_id: 1000003",
		"base_url: https://proxyuser:******@llm.example/v1", "model: gpt-4o-mini", "addr: :8080"} {
		if !strings.Contains(r.Text, s) {
			t.Errorf("the masked configuration lacks %q:\n%s", s, r.Text)
		}
	}
	if len(r.Problems) != 0 {
		t.Errorf("problems of a valid configuration: %v", r.Problems)
	}

	// An unset secret shows as unset: a mask would say one is set.
	cfg.LLM.APIKey = ""
	if r := panelConfig(cfg, false); strings.Count(r.Text, "'******'") != 7 || !strings.Contains(r.Text, `api_key: ""`) {
		t.Errorf("an empty api_key is not shown as empty:\n%s", r.Text)
	}

	cfg.LLM.Model = ""
	if r := panelConfig(cfg, false); len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "llm.model") {
		t.Errorf("check result %v, want the empty llm.model", r.Problems)
	}
}

// TestPanelNeverShowsSecrets walks the running service's panel and API, and
// looks for every secret in every response, headers included.
func TestPanelNeverShowsSecrets(t *testing.T) {
	e := newEnv(t, respond)
	e.post(e.text("zhangsan", "你好"))
	e.waitDelivered(1)
	secrets := map[string]string{
		"app secret": testSecret, "callback token": testToken, "AES key": e.aesKey, "LLM key": "sk-test-key",
		"admin password": testAdminPW, "access token": e.sim.CurrentToken(testAgent),
	}
	if secrets["access token"] == "" {
		t.Fatal("no access token issued")
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	base := "http://" + e.m.Addr
	var seen []string
	check := func(what string, resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var all strings.Builder
		for k, v := range resp.Header {
			fmt.Fprintf(&all, "%s: %s\n", k, strings.Join(v, ", "))
		}
		all.Write(body)
		for name, s := range secrets {
			if strings.Contains(all.String(), s) {
				t.Errorf("%s shows the %s", what, name)
			}
		}
		seen = append(seen, what)
		if resp.StatusCode >= 400 {
			t.Errorf("%s: status %d", what, resp.StatusCode)
		}
		return string(body)
	}
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Accept-Language", "en")
		resp, err := client.Do(req)
		return check("GET "+path, resp, err)
	}
	post := func(path string, form url.Values) string {
		t.Helper()
		resp, err := client.PostForm(base+path, form)
		return check("POST "+path, resp, err)
	}

	get("/admin/login")
	post("/admin/login", url.Values{"username": {"admin"}, "password": {testAdminPW}})
	for _, p := range []string{"/admin/", "/admin/conversations", "/admin/conversations/helpdesk/zhangsan",
		"/admin/messages", "/admin/send", "/healthz", "/readyz", "/metrics"} {
		get(p)
	}
	cfg := get("/admin/config")
	if !strings.Contains(cfg, "secret: &#39;******&#39;") || !strings.Contains(cfg, "Configuration OK.") {
		t.Errorf("configuration page:\n%s", cfg)
	}
	post("/admin/bots/helpdesk/token/refresh", nil)
	secrets["new access token"] = e.sim.CurrentToken(testAgent)
	get("/admin/")
	post("/admin/send", url.Values{"bot": {"helpdesk"}, "user": {"zhangsan"}, "text": {"hello"}})
	e.waitDelivered(2)
	get("/admin/send")
	post("/admin/conversations/helpdesk/zhangsan/reset", nil)

	req, _ := http.NewRequest("GET", base+"/api/bots", nil)
	req.SetBasicAuth("admin", testAdminPW)
	resp, err := client.Do(req)
	check("GET /api/bots", resp, err)
	req, _ = http.NewRequest("POST", base+"/api/bots/helpdesk/token/refresh", nil)
	req.SetBasicAuth("admin", testAdminPW)
	resp, err = client.Do(req)
	check("POST /api/bots/helpdesk/token/refresh", resp, err)
	post("/admin/logout", nil)
	if len(seen) < 18 {
		t.Fatalf("only %d responses checked", len(seen))
	}
}

// TestPanelWithAnAIBot: a service with an app and an AI bot in callback
// mode, wired as serve wires it, shows the AI bot by kind and mode in
// /api/bots (no token) and on the dashboard, is ready, refuses a token
// refresh or a send through the AI bot with 409, and shows none of its
// secrets.
func TestPanelWithAnAIBot(t *testing.T) {
	const aiToken = "aibotCallbackTokenNeverShown"
	aiKey := wecomsim.NewEncodingAESKey()
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})
	e := prepareEnv(t, sim.Handler(), respond)
	e.sim = sim
	e.moreBots = fmt.Sprintf("  - name: assistant\n    kind: aibot\n    token: %q\n    encoding_aes_key: %q\n", aiToken, aiKey)
	e.start()
	base := "http://" + e.m.Addr
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// call answers a request to the API (basic auth) or the panel.
	call := func(method, path string, form url.Values) (int, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		req.SetBasicAuth("admin", testAdminPW)
		req.Header.Set("Accept-Language", "en")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for name, secret := range map[string]string{"AI bot token": aiToken, "AI bot AES key": aiKey, "app secret": testSecret} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s %s shows the %s", method, path, name)
			}
		}
		return resp.StatusCode, string(b)
	}

	status, body := call("GET", "/api/bots", nil)
	var out struct {
		Bots []map[string]json.RawMessage `json:"bots"`
	}
	if err := json.Unmarshal([]byte(body), &out); status != 200 || err != nil || len(out.Bots) != 2 {
		t.Fatalf("/api/bots: %d %v\n%s", status, err, body)
	}
	app, ai := out.Bots[0], out.Bots[1]
	if string(app["kind"]) != `"app"` || app["token"] == nil {
		t.Errorf("the app's entry: %s", body)
	}
	if string(ai["kind"]) != `"aibot"` || string(ai["mode"]) != `"callback"` || ai["token"] != nil || ai["connection"] != nil {
		t.Errorf("the AI bot's entry: %s", body)
	}
	// Ready once the app's first token is in; the AI bot needs none.
	var ready string
	eventually.True(t, func() bool {
		status, body := call("GET", "/readyz", nil)
		ready = body
		return status == 200
	}, "the service to be ready")
	if !strings.Contains(ready, `"assistant":"callback"`) {
		t.Errorf("/readyz: %s", ready)
	}
	if status, body := call("POST", "/api/bots/assistant/token/refresh", nil); status != http.StatusConflict || !strings.Contains(body, "no access token") {
		t.Errorf("a token refresh of the AI bot: %d %s", status, body)
	}

	// The panel, logged in with a session (call's client keeps the cookie).
	if status, _ := call("POST", "/admin/login", url.Values{"username": {"admin"}, "password": {testAdminPW}}); status != http.StatusSeeOther {
		t.Fatalf("login: %d", status)
	}
	if status, body := call("GET", "/admin/", nil); status != 200 || !strings.Contains(body, `id="bot-assistant"`) ||
		!strings.Contains(body, "/wecom/assistant/callback") || strings.Count(body, `class="refresh"`) != 1 {
		t.Errorf("dashboard: %d\n%s", status, body)
	}
	if status, body := call("GET", "/admin/send", nil); status != 200 || strings.Contains(body, "<option>assistant</option>") {
		t.Errorf("the send form offers the callback AI bot: %d", status)
	}
	status, body = call("POST", "/admin/send", url.Values{"bot": {"assistant"}, "user": {"zhangsan"}, "text": {"hi"}})
	if status != http.StatusConflict || !strings.Contains(body, "cannot send first") {
		t.Errorf("a send through the callback AI bot: %d\n%s", status, body)
	}
}
