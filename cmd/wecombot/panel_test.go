package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
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
	r := panelConfig(cfg)
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
	if r := panelConfig(cfg); strings.Count(r.Text, "'******'") != 7 || !strings.Contains(r.Text, `api_key: ""`) {
		t.Errorf("an empty api_key is not shown as empty:\n%s", r.Text)
	}

	cfg.LLM.Model = ""
	if r := panelConfig(cfg); len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "llm.model") {
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
