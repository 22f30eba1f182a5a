package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
)

const (
	testCorp    = "wwtestcorp0001"
	testAgent   = 1000002
	testSecret  = "app-secret-VALUE-never-shown"
	testToken   = "cbTokenNeverShown"
	testAdminPW = "admin-pw-never-shown"
)

// env is a running service between a simulated WeCom and a fake LLM.
type env struct {
	t      testing.TB
	sim    *wecomsim.Server
	simSrv *httptest.Server
	llm    *llmtest.Server
	llmSrv *httptest.Server
	aesKey string
	dbPath string
	m      *Main
	cb     *wecomsim.Callback
	msgID  atomic.Int64
	// simulator is wecom.simulator: api_base is the simulator, and the
	// panel has its chat page.
	simulator bool
	// moreBots is YAML appended to bots: (each line indented for it).
	moreBots string
}

func newEnv(t testing.TB, respond func(llmtest.Request) llmtest.Reply) *env {
	t.Helper()
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})
	e := prepareEnv(t, sim.Handler(), respond)
	e.sim = sim
	e.start()
	return e
}

// prepareEnv is an env whose wecom.api_base is api, not started yet.
func prepareEnv(t testing.TB, api http.Handler, respond func(llmtest.Request) llmtest.Reply) *env {
	t.Helper()
	e := &env{t: t, aesKey: wecomsim.NewEncodingAESKey(), dbPath: filepath.Join(t.TempDir(), "wecombot.db")}
	e.simSrv = httptest.NewServer(api)
	t.Cleanup(e.simSrv.Close)
	e.llm = llmtest.New(respond)
	e.llm.RequireKey("sk-test-key")
	e.llmSrv = httptest.NewServer(e.llm.Handler())
	t.Cleanup(func() { e.llm.Close(); e.llmSrv.Close() })
	e.msgID.Store(7440000000000000000)
	return e
}

func (e *env) config() *Config {
	e.t.Helper()
	yml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", shutdown_timeout: 5s}
storage: {driver: sqlite, dsn: %q}
wecom: {api_base: %q, simulator: %v}
llm: {base_url: %q, api_key: "${TEST_LLM_KEY}", model: test-model, system_prompt: "You are a test.", timeout: 5s, retries: 1}
admin: {username: admin, password: %q}
log: {level: error}
bots:
  - name: helpdesk
    corp_id: %q
    agent_id: %d
    secret: %q
    token: %q
    encoding_aes_key: %q
%s`, e.dbPath, e.simSrv.URL, e.simulator, e.llmSrv.URL+"/v1", testAdminPW, testCorp, testAgent, testSecret, testToken, e.aesKey, e.moreBots)
	cfg, err := ParseConfig([]byte(yml), func(k string) (string, bool) {
		if k == "TEST_LLM_KEY" {
			return "sk-test-key", true
		}
		return "", false
	})
	if err != nil {
		e.t.Fatalf("config: %v", err)
	}
	return cfg
}

func (e *env) start() {
	e.t.Helper()
	e.m = NewMain(e.config(), io.Discard)
	if err := e.m.Open(context.Background()); err != nil {
		e.t.Fatalf("open: %v", err)
	}
	m := e.m
	e.t.Cleanup(func() { _ = m.Close() })
	e.cb = &wecomsim.Callback{
		URL: "http://" + e.m.Addr + "/wecom/helpdesk/callback", Token: testToken,
		EncodingAESKey: e.aesKey, CorpID: testCorp,
	}
}

func (e *env) restart() {
	e.t.Helper()
	if err := e.m.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	e.start()
}

func (e *env) text(user, content string) []byte {
	return wecomsim.TextXML(testCorp, user, content, e.msgID.Add(1), time.Now().Unix(), testAgent)
}

func (e *env) post(xml []byte) {
	e.t.Helper()
	status, body, err := e.cb.Post(context.Background(), xml)
	if err != nil || status != http.StatusOK || body != "" {
		e.t.Fatalf("callback: status %d body %q err %v; want 200 with an empty body", status, body, err)
	}
}

// waitFor waits, up to d, until done holds for the messages delivered so
// far, and returns them.
func (e *env) waitFor(d time.Duration, done func([]wecomsim.Sent) bool) []wecomsim.Sent {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		sent := e.sim.Delivered()
		if done(sent) {
			return sent
		}
		if _, err := e.sim.WaitDelivered(ctx, len(sent)+1); err != nil {
			if sent := e.sim.Delivered(); done(sent) {
				return sent
			}
			e.t.Fatalf("after %v, %d messages delivered, not yet what the test waits for: %v", d, len(e.sim.Delivered()), err)
		}
	}
}

// waitDelivered waits for the n-th delivered message overall.
func (e *env) waitDelivered(n int) []wecomsim.Sent {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sent, err := e.sim.WaitDelivered(ctx, n)
	if err != nil {
		e.t.Fatalf("waiting for %d delivered messages (have %d): %v", n, len(e.sim.Delivered()), err)
	}
	return sent
}

func lastUser(r llmtest.Request) string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

var longAnswer = strings.Repeat("第一段落，这是一个很长的回答。", 60) + "\n\n" +
	strings.Repeat("Second paragraph, in English this time. ", 40) + "\n\n" +
	strings.Repeat("第三段：结束前的最后一些文字。", 60)

func respond(r llmtest.Request) llmtest.Reply {
	q := lastUser(r)
	switch {
	case strings.Contains(q, "long please"):
		return llmtest.Reply{Content: longAnswer}
	case strings.Contains(q, "fail please"):
		return llmtest.Reply{Status: http.StatusInternalServerError}
	}
	return llmtest.Reply{Content: fmt.Sprintf("answer to %q after %d messages", q, len(r.Messages))}
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t, respond)

	t.Run("url verification answers the plain echostr", func(t *testing.T) {
		status, body, err := e.cb.VerifyURL(context.Background(), "8273645519283746")
		if err != nil || status != 200 || body != "8273645519283746" {
			t.Fatalf("verify: %d %q %v", status, body, err)
		}
	})

	t.Run("a text is answered through message/send, and the second turn sees the first", func(t *testing.T) {
		before := len(e.sim.Delivered())
		e.post(e.text("zhangsan", "你好"))
		sent := e.waitDelivered(before + 1)
		got := sent[before]
		if got.ToUser != "zhangsan" || got.AgentID != testAgent || got.Content != `answer to "你好" after 2 messages` {
			t.Fatalf("delivered %+v", got)
		}
		e.post(e.text("zhangsan", "second"))
		sent = e.waitDelivered(before + 2)
		if want := `answer to "second" after 4 messages`; sent[before+1].Content != want {
			t.Fatalf("second answer %q, want %q", sent[before+1].Content, want)
		}
		reqs := e.llm.Requests()
		last := reqs[len(reqs)-1]
		want := []llmtest.Message{
			{Role: "system", Content: "You are a test."},
			{Role: "user", Content: "你好"},
			{Role: "assistant", Content: `answer to "你好" after 2 messages`},
			{Role: "user", Content: "second"},
		}
		if fmt.Sprint(last.Messages) != fmt.Sprint(want) {
			t.Fatalf("second request messages:\n%v\nwant\n%v", last.Messages, want)
		}
	})

	t.Run("a retried MsgId is answered once", func(t *testing.T) {
		before := len(e.sim.Delivered())
		calls := e.llm.Calls()
		attempts, err := e.cb.PostWithRetry(context.Background(), e.text("lisi", "retried"), 3)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range attempts {
			if a.Status != 200 || a.Body != "" || a.Err != nil {
				t.Fatalf("attempt %d: %+v, want 200 with an empty body (duplicates too)", i, a)
			}
		}
		// Messages of one user are answered in order: once the next
		// message is answered, a duplicate answer would already be there.
		e.post(e.text("lisi", "next"))
		sent := e.waitDelivered(before + 2)
		var toLisi []string
		for _, s := range sent[before:] {
			if s.ToUser == "lisi" {
				toLisi = append(toLisi, s.Content)
			}
		}
		if len(toLisi) != 2 || !strings.Contains(toLisi[0], "retried") || !strings.Contains(toLisi[1], "next") {
			t.Fatalf("answers to lisi: %q; want one for retried, then next", toLisi)
		}
		if got := e.llm.Calls() - calls; got != 2 {
			t.Fatalf("LLM called %d times for 2 distinct messages", got)
		}
	})

	t.Run("a long answer is split in order on boundaries", func(t *testing.T) {
		before := len(e.sim.Delivered())
		e.post(e.text("wangwu", "long please"))
		e.post(e.text("wangwu", "after the long one"))
		var parts []string
		e.waitFor(15*time.Second, func(sent []wecomsim.Sent) bool {
			parts = parts[:0]
			for _, s := range sent[before:] {
				if s.ToUser != "wangwu" {
					continue
				}
				if strings.Contains(s.Content, "after the long one") {
					return true
				}
				parts = append(parts, s.Content)
			}
			return false
		})
		if len(longAnswer) <= 5000 || len(parts) < 3 {
			t.Fatalf("%d parts for %d bytes", len(parts), len(longAnswer))
		}
		for i, p := range parts {
			if len(p) > 2048 || !utf8.ValidString(p) {
				t.Errorf("part %d: %d bytes, valid UTF-8 %v", i, len(p), utf8.ValidString(p))
			}
		}
		if strings.Join(parts, "") != longAnswer {
			t.Fatalf("parts do not join back to the answer")
		}
		if !strings.HasSuffix(parts[0], "\n\n") && !strings.HasSuffix(parts[0], "。") {
			t.Errorf("first part ends mid-sentence: %q", parts[0][len(parts[0])-20:])
		}
	})

	t.Run("commands never reach the LLM", func(t *testing.T) {
		before := len(e.sim.Delivered())
		calls := e.llm.Calls()
		e.post(e.text("zhaoliu", "hello"))
		e.post(e.text("zhaoliu", "/help"))
		e.post(e.text("zhaoliu", "/reset"))
		e.post(e.text("zhaoliu", "after reset"))
		sent := e.waitDelivered(before + 4)
		if !strings.Contains(sent[before+1].Content, "/reset") || sent[before+2].Content != "好的，已开始新的对话。" {
			t.Fatalf("help/reset answers: %q / %q", sent[before+1].Content, sent[before+2].Content)
		}
		if got := sent[before+3].Content; got != `answer to "after reset" after 2 messages` {
			t.Fatalf("after /reset the history should be empty: %q", got)
		}
		if got := e.llm.Calls() - calls; got != 2 {
			t.Fatalf("LLM called %d times, want 2", got)
		}
	})

	t.Run("non-text gets the text-only notice; an LLM failure a friendly text", func(t *testing.T) {
		before := len(e.sim.Delivered())
		e.post(wecomsim.MediaXML(testCorp, "sunqi", "image", e.msgID.Add(1), time.Now().Unix(), testAgent))
		e.post(e.text("sunqi", "fail please"))
		sent := e.waitDelivered(before + 2)
		if sent[before].Content != "目前只能理解文字消息，请用文字描述您的问题。" {
			t.Fatalf("image answer %q", sent[before].Content)
		}
		if got := sent[before+1].Content; got != "抱歉，助手暂时无法回答，请稍后再试。" {
			t.Fatalf("failure answer %q", got)
		}
	})

	t.Run("hostile callbacks are refused and change nothing", func(t *testing.T) {
		url := "http://" + e.m.Addr
		cases := []struct {
			name   string
			path   string
			body   string
			status int
		}{
			{"unknown bot", "/wecom/nobody/callback?msg_signature=a&timestamp=1&nonce=n", "<xml/>", 404},
			{"missing query", "/wecom/helpdesk/callback", "<xml/>", 400},
			{"timestamp not a number", "/wecom/helpdesk/callback?msg_signature=a&timestamp=x&nonce=n", "<xml/>", 400},
			{"malformed envelope", "/wecom/helpdesk/callback?msg_signature=a&timestamp=1&nonce=n", "<xml><Encrypt>", 400},
			{"bad signature", "/wecom/helpdesk/callback?msg_signature=0000&timestamp=1&nonce=n", "<xml><Encrypt><![CDATA[abcd]]></Encrypt></xml>", 403},
			{"body over 1 MiB", "/wecom/helpdesk/callback?msg_signature=a&timestamp=1&nonce=n", strings.Repeat("x", 1<<20+1), 413},
		}
		for _, c := range cases {
			resp, err := http.Post(url+c.path, "text/xml", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.status)
			}
		}
	})

	t.Run("admin API shows token state and never a secret", func(t *testing.T) {
		url := "http://" + e.m.Addr + "/api/bots"
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("without auth: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest("GET", url, nil)
		req.SetBasicAuth("admin", testAdminPW)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out struct {
			Bots []struct {
				Name    string `json:"name"`
				CorpID  string `json:"corp_id"`
				AgentID int64  `json:"agent_id"`
				Token   struct {
					ExpiresAt    string `json:"expires_at"`
					FetchedAt    string `json:"fetched_at"`
					RefreshCount int64  `json:"refresh_count"`
					LastError    string `json:"last_error"`
					Source       string `json:"source"`
				} `json:"token"`
			} `json:"bots"`
		}
		if err := json.Unmarshal(body, &out); err != nil || len(out.Bots) != 1 {
			t.Fatalf("body %s: %v", body, err)
		}
		b := out.Bots[0]
		if b.Name != "helpdesk" || b.CorpID != testCorp || b.AgentID != testAgent || b.Token.RefreshCount != 1 || b.Token.Source != "gettoken" {
			t.Fatalf("bot %+v", b)
		}
		if _, err := time.Parse(time.RFC3339, b.Token.ExpiresAt); err != nil {
			t.Fatalf("expires_at %q: %v", b.Token.ExpiresAt, err)
		}
		for _, secret := range []string{testSecret, testToken, e.aesKey, testAdminPW, "sk-test-key", e.sim.CurrentToken(testAgent)} {
			if strings.Contains(string(body), secret) {
				t.Fatalf("response contains a secret: %s", body)
			}
		}
	})

	t.Run("after a restart: the token is reused and a retry is still a duplicate", func(t *testing.T) {
		xml := e.text("restart-user", "before restart")
		before := len(e.sim.Delivered())
		e.post(xml)
		e.waitDelivered(before + 1)
		e.restart()
		e.post(xml) // WeCom's retry lands on the new process
		e.post(e.text("restart-user", "after restart"))
		sent := e.waitDelivered(before + 2)
		if !strings.Contains(sent[before+1].Content, "after restart") {
			t.Fatalf("after restart the retried message was answered again: %q", sent[before+1].Content)
		}
		if got := e.sim.TokenFetches(testAgent); got != 1 {
			t.Fatalf("gettoken called %d times across a restart, want 1", got)
		}
	})

	t.Run("a forced refresh through the API and the metrics", func(t *testing.T) {
		base := "http://" + e.m.Addr
		req, _ := http.NewRequest("POST", base+"/api/bots/helpdesk/token/refresh", nil)
		req.SetBasicAuth("admin", testAdminPW)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"refresh_count":2`) {
			t.Fatalf("refresh: %d %s", resp.StatusCode, body)
		}
		if got := e.sim.TokenFetches(testAgent); got != 2 {
			t.Fatalf("gettoken calls after a forced refresh: %d, want 2", got)
		}
		if strings.Contains(string(body), e.sim.CurrentToken(testAgent)) {
			t.Fatal("refresh answer contains the token")
		}
		resp, err = http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			// Counters belong to the process: the restarted one fetched once.
			`wecombot_token_fetch_total{bot="helpdesk",result="ok"} 1`,
			`wecombot_token_expires_in_seconds{bot="helpdesk"} 7`,
			// By model and host: nothing asked right now; llm.max_concurrency,
			// no rate limit seen.
			fmt.Sprintf(`wecombot_llm_in_flight{host=%q,model="test-model"} 0`, strings.TrimPrefix(e.llmSrv.URL, "http://")),
			fmt.Sprintf(`wecombot_llm_concurrency_limit{host=%q,model="test-model"} 2000`, strings.TrimPrefix(e.llmSrv.URL, "http://")),
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}
