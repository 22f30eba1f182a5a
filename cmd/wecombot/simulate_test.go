package main

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/llm/llmtest"
)

func TestSimulateDrivesARunningService(t *testing.T) {
	simAddr, svcAddr, yml := simulateConfig(t, "")
	cfg, feed, out, done := startSimulate(t, yml, simAddr, svcAddr)
	ctx := t.Context()
	m := NewMain(cfg, io.Discard)
	if err := m.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	fmt.Fprintln(feed, "alice: hello from the command line")
	fmt.Fprintln(feed, "no colon here")
	feed.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// What the service's configuration needs, for the panel's chat page too.
		fmt.Sprintf("WeCom simulator on http://%s;", simAddr),
		fmt.Sprintf("  wecom:\n    api_base: \"http://%s\"\n    simulator: true", simAddr),
		`-> alice: hello from the command line (callback 200 ""`,
		`!! expected "user: text"`,
		`<- alice: echo: hello from the command line`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestSimulateDrivesKF: for an app with kf.enabled, "kf:<customer>: text"
// lines are a WeChat customer writing to its 微信客服 account; the service
// pulls the message and the answer printed is what reached kf/send_msg.
func TestSimulateDrivesKF(t *testing.T) {
	simAddr, svcAddr, yml := simulateConfig(t, ", kf: {enabled: true}")
	cfg, feed, out, done := startSimulate(t, yml, simAddr, svcAddr)
	m := NewMain(cfg, io.Discard)
	if err := m.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	fmt.Fprintln(feed, "kf:wmAlice: 你好，客服")
	fmt.Fprintln(feed, "bob: an employee still writes to the app")
	feed.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		`lines "kf:<external_userid>: text" write to 微信客服 account ` + simKFAccount,
		"-> kf wmAlice: 你好，客服 (kf_msg_or_event callback answered in",
		"<- kf wmAlice: echo: 你好，客服",
		"<- bob: echo: an employee still writes to the app",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "!!") {
		t.Errorf("simulate reported a problem:\n%s", got)
	}
}

func TestSimulateDrivesAnAIBot(t *testing.T) {
	simAddr, svcAddr := freeAddr(t), freeAddr(t)
	yml := fmt.Sprintf(`
server: {addr: %q}
storage: {dsn: %q}
wecom: {api_base: "http://%s"}
admin: {password: pw}
log: {level: error}
bots:
  - {name: helper, kind: aibot, mode: callback, bot_id: aibdev, token: tk, encoding_aes_key: %q}
`, svcAddr, filepath.Join(t.TempDir(), "db"), simAddr, wecomsim.NewEncodingAESKey())
	cfg, feed, out, done := startSimulate(t, yml, simAddr, svcAddr)
	ctx := t.Context()
	m := NewMain(cfg, io.Discard)
	m.LLM = llm.Echo{}
	if err := m.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	fmt.Fprintln(feed, "alice: "+strings.Repeat("长", 7000))
	feed.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		fmt.Sprintf("AI bot helper: callbacks go to http://%s/wecom/helper/callback", svcAddr),
		"<- alice: 【演示模型 / demo model】你说：长长",
		"<- alice (response_url): 长",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%.600s", want, got)
		}
	}
	if strings.Contains(got, "!!") {
		t.Errorf("simulate reported a problem:\n%.2000s", got)
	}
}

// simulateConfig is a service's configuration with one app, dev (extra
// ends its YAML flow map), answered by a fake model, and the free addresses
// of the simulator and the service.
func simulateConfig(t *testing.T, extra string) (simAddr, svcAddr, yml string) {
	t.Helper()
	fake := llmtest.New(nil)
	llmSrv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); llmSrv.Close() })
	simAddr, svcAddr = freeAddr(t), freeAddr(t)
	yml = fmt.Sprintf(`
server: {addr: %q}
storage: {dsn: %q}
wecom: {api_base: "http://%s"}
llm: {base_url: %q, model: m}
admin: {password: pw}
log: {level: error}
bots:
  - {name: dev, corp_id: wwdev, agent_id: 5, secret: s, token: tk, encoding_aes_key: %q%s}
`, svcAddr, filepath.Join(t.TempDir(), "db"), simAddr, llmSrv.URL+"/v1", wecomsim.NewEncodingAESKey(), extra)
	return simAddr, svcAddr, yml
}

// startSimulate runs `wecombot simulate` for the configuration yml until
// the returned input is closed, and waits for its prompt.
func startSimulate(t *testing.T, yml, simAddr, svcAddr string) (*Config, *io.PipeWriter, *syncBuffer, <-chan error) {
	t.Helper()
	cfg, err := ParseConfig([]byte(yml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	in, feed := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	go func() {
		done <- runSimulate(ctx, simulateOptions{Config: cfg, Listen: simAddr, Service: "http://" + svcAddr, In: in, Out: out})
	}()
	eventually.True(t, func() bool { return strings.Contains(out.String(), "type lines") }, "simulate printed no prompt: %v", later(out.String))
	return cfg, feed, out, done
}
