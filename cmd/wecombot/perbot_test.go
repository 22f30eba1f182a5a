package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// TestPerBotModels: two bots, two models, two prompts, two keys, as the
// fake OpenAI-compatible model sees them: each bot's calls carry its own
// key, model, system prompt, stream and history_turns; each model endpoint
// has its own health, and GET /api/bots shows both models, never a key.
func TestPerBotModels(t *testing.T) {
	const (
		keyA, keyB = "sk-model-a-never-shown", "sk-model-b-never-shown"
		hrAgent    = 1000003
		hrSecret   = "hr-app-secret-never-shown"
	)
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{
		{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}, {CorpID: testCorp, AgentID: hrAgent, Secret: hrSecret},
	}})
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)

	// The fake model answers with what it was asked, and refuses a call
	// whose key is not its model's, as a provider would.
	fake := llmtest.New(func(r llmtest.Request) llmtest.Reply {
		if strings.Contains(lastUser(r), "fail please") {
			return llmtest.Reply{Status: http.StatusInternalServerError}
		}
		var system string
		if len(r.Messages) > 0 && r.Messages[0].Role == "system" {
			system = r.Messages[0].Content
		}
		return llmtest.Reply{Content: fmt.Sprintf("model=%s prompt=%q messages=%d", r.Model, system, len(r.Messages))}
	})
	keys := map[string]string{"model-a": keyA, "model-b": keyB}
	var mu sync.Mutex
	var calls []string // "model key stream"
	handler := fake.Handler()
	llmSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		_ = json.Unmarshal(body, &req)
		auth := r.Header.Get("Authorization")
		mu.Lock()
		calls = append(calls, fmt.Sprintf("%s %s %v", req.Model, strings.TrimPrefix(auth, "Bearer "), req.Stream))
		mu.Unlock()
		if want, ok := keys[req.Model]; !ok || auth != "Bearer "+want {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { fake.Close(); llmSrv.Close() })

	aesKey := wecomsim.NewEncodingAESKey()
	yml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", shutdown_timeout: 5s}
storage: {driver: sqlite, dsn: %q}
wecom: {api_base: %q}
llm: {base_url: %q, api_key: "${KEY_A}", model: model-a, system_prompt: "Prompt A.", timeout: 5s, retries: 0}
admin: {username: admin, password: %q}
log: {level: error}
bots:
  - {name: helpdesk, corp_id: %q, agent_id: %d, secret: %q, token: %q, encoding_aes_key: %q}
  - name: hr
    corp_id: %[5]q
    agent_id: %[10]d
    secret: %[11]q
    token: %[8]q
    encoding_aes_key: %[9]q
    llm:
      api_key: "${KEY_B}"
      model: model-b
      system_prompt: "Prompt B."
      stream: false
      history_turns: 0
`, filepath.Join(t.TempDir(), "wecombot.db"), simSrv.URL, llmSrv.URL+"/v1", testAdminPW,
		testCorp, testAgent, testSecret, testToken, aesKey, hrAgent, hrSecret)
	m := openMain(t, yml, map[string]string{"KEY_A": keyA, "KEY_B": keyB})

	var msgID int64 = 7450000000000000000
	post := func(bot string, agent int64, user, text string) {
		t.Helper()
		msgID++
		cb := &wecomsim.Callback{URL: "http://" + m.Addr + "/wecom/" + bot + "/callback", Token: testToken, EncodingAESKey: aesKey, CorpID: testCorp}
		status, body, err := cb.Post(context.Background(), wecomsim.TextXML(testCorp, user, text, msgID, time.Now().Unix(), agent))
		if err != nil || status != http.StatusOK || body != "" {
			t.Fatalf("callback of %s: %d %q %v", bot, status, body, err)
		}
	}
	waitDelivered := func(n int) []wecomsim.Sent {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		sent, err := sim.WaitDelivered(ctx, n)
		if err != nil {
			t.Fatalf("waiting for %d delivered messages (have %d): %v", n, len(sim.Delivered()), err)
		}
		return sent
	}
	// The answer of agent to user: the last one delivered.
	answer := func(sent []wecomsim.Sent, agent int64, user string) string {
		for i := len(sent) - 1; i >= 0; i-- {
			if sent[i].AgentID == agent && sent[i].ToUser == user {
				return sent[i].Content
			}
		}
		return ""
	}

	post("helpdesk", testAgent, "alice", "first")
	post("hr", hrAgent, "bob", "first")
	sent := waitDelivered(2)
	if got, want := answer(sent, testAgent, "alice"), `model=model-a prompt="Prompt A." messages=2`; got != want {
		t.Errorf("helpdesk answered %q, want %q", got, want)
	}
	if got, want := answer(sent, hrAgent, "bob"), `model=model-b prompt="Prompt B." messages=2`; got != want {
		t.Errorf("hr answered %q, want %q", got, want)
	}
	// Second turns: helpdesk sends its history, hr (history_turns: 0) not.
	post("helpdesk", testAgent, "alice", "second")
	waitDelivered(3)
	post("hr", hrAgent, "bob", "second")
	sent = waitDelivered(4)
	if got := answer(sent, testAgent, "alice"); !strings.HasSuffix(got, "messages=4") {
		t.Errorf("helpdesk's second answer %q: want the history sent (4 messages)", got)
	}
	if got := answer(sent, hrAgent, "bob"); !strings.HasSuffix(got, "messages=2") {
		t.Errorf("hr's second answer %q: want no history (history_turns: 0)", got)
	}
	mu.Lock()
	seen := slices.Clone(calls)
	mu.Unlock()
	slices.Sort(seen)
	seen = slices.Compact(seen)
	if want := []string{"model-a " + keyA + " true", "model-b " + keyB + " false"}; !slices.Equal(seen, want) {
		t.Errorf("the model saw the calls %q, want %q (each bot's model, key and stream)", seen, want)
	}

	// hr's model fails (retries: 0): its endpoint is failing, helpdesk's
	// is not.
	post("hr", hrAgent, "bob", "fail please")
	waitDelivered(5)
	bots := apiBots(t, m.Addr, keyA, keyB)
	byName := map[string]apiModel{}
	for _, b := range bots.Bots {
		byName[b.Name] = b.LLM
	}
	host := strings.TrimPrefix(llmSrv.URL, "http://")
	if a := byName["helpdesk"]; a.Model != "model-a" || a.Host != host || a.APIKey != "******" || a.State != "ok" {
		t.Errorf("helpdesk's model: %+v", a)
	}
	if b := byName["hr"]; b.Model != "model-b" || b.Host != host || b.APIKey != "******" || b.State != "failing" || b.LastError == "" {
		t.Errorf("hr's model: %+v, want failing", b)
	}
	if len(bots.Models) != 2 || bots.Models[0].Model != "model-a" || !slices.Equal(bots.Models[0].Bots, []string{"helpdesk"}) ||
		bots.Models[1].Model != "model-b" || !slices.Equal(bots.Models[1].Bots, []string{"hr"}) || bots.Models[1].State != "failing" {
		t.Errorf("models %+v: want model-a (helpdesk, ok) and model-b (hr, failing)", bots.Models)
	}
}

type apiModel struct {
	Model     string `json:"model"`
	Host      string `json:"host"`
	APIKey    string `json:"api_key"`
	State     string `json:"state"`
	LastError string `json:"last_error"`
}

type apiBotsJSON struct {
	Bots []struct {
		Name string   `json:"name"`
		LLM  apiModel `json:"llm"`
	} `json:"bots"`
	Models []struct {
		apiModel
		Bots []string `json:"bots"`
	} `json:"models"`
}

// apiBots is GET /api/bots of the service at addr; none of secrets may be
// in it.
func apiBots(t *testing.T, addr string, secrets ...string) apiBotsJSON {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/bots", nil)
	req.SetBasicAuth("admin", testAdminPW)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, s := range secrets {
		if strings.Contains(string(body), s) {
			t.Errorf("GET /api/bots shows a key: %s", body)
		}
	}
	var out apiBotsJSON
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/bots: %d %s %v", resp.StatusCode, body, err)
	}
	return out
}

// openMain runs the service of the YAML configuration yml, its ${VAR}s
// from env, until the test ends.
func openMain(t *testing.T, yml string, env map[string]string) *Main {
	t.Helper()
	cfg, err := ParseConfig([]byte(yml), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, io.Discard)
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}
