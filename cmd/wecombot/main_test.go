package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
	"github.com/wecombot/wecombot/storage/pgtest"
)

// TestMain gives buildBinary a folder that outlives each test, and stops
// the scale-out tests' Postgres server (see pgtest) at the end.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wecombot-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary.dir = dir
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// later formats as what f returns when the message is written: a failure
// message then shows the state at the deadline, not at the start of the
// wait.
type later func() string

func (l later) String() string { return l() }

// syncBuffer is a bytes.Buffer the service may log into while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeConfig writes yml to a file of a fresh folder whose database lives
// there too, and returns the file's path.
func writeConfig(t *testing.T, yml string) string {
	t.Helper()
	dir := t.TempDir()
	yml = "storage: {dsn: " + filepath.Join(dir, "data", "wecombot.db") + "}\n" + yml
	path := filepath.Join(dir, "wecombot.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// badYAML has four problems.
var badYAML = edit(edit(edit(goodYAML, "agent_id:", "agent_id: 0"), "token_refresh_before:", "token_refresh_before: 5x"),
	"api_key:", "api_key: sk", "modle: gpt") + "  - {name: helpdesk, corp_id: c, agent_id: 2, secret: s, token: t, encoding_aes_key: " + cfgAESKey + "}\n"

var badProblems = []string{
	"bots[0] (helpdesk).agent_id", `wecom.token_refresh_before: line 6: "5x"`, "unknown key: line 9: llm.modle", `bots[1] (helpdesk).name: "helpdesk" is used by another bot`,
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunCheck(t *testing.T) {
	good := writeConfig(t, goodYAML)
	bad := writeConfig(t, badYAML)

	t.Run("a good file is OK", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "check", "-config", good)
		if code != 0 || !strings.Contains(stdout, "configuration OK") || !strings.Contains(stdout, good) || stderr != "" {
			t.Fatalf("check = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})

	t.Run("a bad file lists every problem", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "check", "-config", bad)
		if code != 1 || stdout != "" {
			t.Fatalf("check = %d, stdout %q; want 1 and nothing", code, stdout)
		}
		listed := strings.Count(stderr, "\n  - ")
		if listed != len(badProblems) {
			t.Errorf("%d problems listed, want %d:\n%s", listed, len(badProblems), stderr)
		}
		for _, p := range badProblems {
			if !strings.Contains(stderr, p) {
				t.Errorf("problem %q not listed:\n%s", p, stderr)
			}
		}
		for _, s := range cfgSecrets {
			if strings.Contains(stderr, s) {
				t.Errorf("output shows secret %q:\n%s", s, stderr)
			}
		}
	})

	t.Run("a missing file is a problem", func(t *testing.T) {
		code, _, stderr := runCmd(t, "check", "-config", filepath.Join(t.TempDir(), "nope.yaml"))
		if code != 1 || !strings.Contains(stderr, "nope.yaml") {
			t.Fatalf("check = %d\nstderr: %s", code, stderr)
		}
	})

	t.Run("WECOMBOT_CONFIG is the default path", func(t *testing.T) {
		t.Setenv("WECOMBOT_CONFIG", good)
		code, stdout, stderr := runCmd(t, "check")
		if code != 0 || !strings.Contains(stdout, good) {
			t.Fatalf("check = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		t.Setenv("WECOMBOT_CONFIG", bad)
		if code, _, stderr := runCmd(t, "check"); code != 1 || !strings.Contains(stderr, bad) {
			t.Fatalf("check with WECOMBOT_CONFIG=bad = %d\nstderr: %s", code, stderr)
		}
		// -config wins over the environment.
		if code, stdout, _ := runCmd(t, "check", "-config", good); code != 0 || !strings.Contains(stdout, good) {
			t.Fatalf("check -config good with WECOMBOT_CONFIG=bad = %d\nstdout: %s", code, stdout)
		}
	})

	t.Run("config.yaml is the last default", func(t *testing.T) {
		t.Setenv("WECOMBOT_CONFIG", "")
		dir := t.TempDir()
		data, err := os.ReadFile(good)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Chdir(dir)
		if code, stdout, stderr := runCmd(t, "check"); code != 0 || !strings.Contains(stdout, "config.yaml: configuration OK") {
			t.Fatalf("check = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})
}

// TestRunCheckWarnings: warnings are printed whatever the verdict and do
// not change the exit status.
func TestRunCheckWarnings(t *testing.T) {
	const warning = ": warning: llm.base_url: the path does not end in /v1; OpenAI-compatible APIs usually need it (https://api.openai.com/v1)\n"
	good := writeConfig(t, edit(goodYAML, "api_key:", "api_key: sk", "base_url: https://api.openai.com"))
	code, stdout, stderr := runCmd(t, "check", "-config", good)
	if code != 0 || stdout != good+": configuration OK (1 bot(s))\n" || stderr != good+warning {
		t.Errorf("check = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	bad := writeConfig(t, edit(edit(goodYAML, "api_key:", "api_key: sk", "base_url: https://api.openai.com"), "addr:", `addr: "8080"`))
	code, stdout, stderr = runCmd(t, "check", "-config", bad)
	want := bad + ": configuration has problems:\n" +
		`  - config: server.addr: "8080" is not host:port: write ":8080" (every interface) or "127.0.0.1:8080" (this machine only)` + "\n" +
		bad + warning
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("check = %d\nstdout: %s\nstderr: %s\nwant stderr: %s", code, stdout, stderr, want)
	}
}

// TestRunNoConfig: without a file named, a missing config.yaml says where
// to start; a file named but missing stays a plain error.
func TestRunNoConfig(t *testing.T) {
	t.Setenv("WECOMBOT_CONFIG", "")
	t.Chdir(t.TempDir())
	const hint = "wecombot: no config.yaml here: try `wecombot demo`, or copy config.yaml from the repository and run `wecombot check`\n"
	for _, args := range [][]string{nil, {"serve"}, {"check"}, {"simulate"}} {
		code, stdout, stderr := runCmd(t, args...)
		if code != 1 || stdout != "" || stderr != hint {
			t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
	code, _, stderr := runCmd(t, "check", "-config", "config.yaml")
	if code != 1 || strings.Contains(stderr, "wecombot demo") || !strings.Contains(stderr, "config.yaml: configuration has problems") {
		t.Errorf("check -config config.yaml = %d\nstderr: %s", code, stderr)
	}
	t.Setenv("WECOMBOT_CONFIG", "config.yaml")
	if code, _, stderr := runCmd(t, "check"); code != 1 || strings.Contains(stderr, "wecombot demo") {
		t.Errorf("check with WECOMBOT_CONFIG = %d\nstderr: %s", code, stderr)
	}
}

func TestRunCommandLine(t *testing.T) {
	bad := writeConfig(t, badYAML)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{name: "unknown command", args: []string{"frobnicate", "-config", bad}, code: 2, stderr: []string{`unknown command "frobnicate"`, "usage:"}},
		{name: "unknown flag", args: []string{"check", "-nope"}, code: 2, stderr: []string{"-nope", "usage:"}},
		// The load tool is a command of its own (cmd/wecombot-load).
		{name: "load is not the product's", args: []string{"load"}, code: 2, stderr: []string{`unknown command "load"`}},
		{name: "load-baseline is not the product's", args: []string{"load-baseline", "-config", bad}, code: 2, stderr: []string{`unknown command "load-baseline"`}},
		{name: "help command", args: []string{"help"}, code: 0, stdout: "usage:"},
		{name: "-h", args: []string{"-h"}, code: 0, stderr: []string{"usage:"}},
		// Without a command run serves, and serve reads the file first.
		{name: "serve is the default", args: []string{"-config", bad}, code: 1, stderr: append([]string{bad + ": configuration has problems"}, badProblems...)},
		{name: "serve by name", args: []string{"serve", "-config", bad}, code: 1, stderr: append([]string{bad + ": configuration has problems"}, badProblems...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tt.stdout)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not contain %q:\n%s", s, stderr)
				}
			}
		})
	}
}

// serveYAML is a configuration for a service on a free local port that talks
// to the given WeCom and LLM.
func serveYAML(addr, wecom, llm string) string {
	return edit(edit(edit(goodYAML, "addr:", `addr: "`+addr+`"`, "shutdown_timeout: 5s"),
		"api_base:", `api_base: "`+wecom+`"`),
		"api_key:", `api_key: "sk-serve"`, `base_url: "`+llm+`/v1"`) + "log: {level: info}\n"
}

var listening = regexp.MustCompile(`wecombot listening"? addr=(\S+)`)

func TestRunServe(t *testing.T) {
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: "wwcfgcorp", AgentID: 1000002, Secret: cfgSecret}}})
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)
	fake := llmtest.New(llmtest.Echo)
	llmSrv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); llmSrv.Close() })
	path := writeConfig(t, serveYAML("127.0.0.1:0", simSrv.URL, llmSrv.URL))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-config", path}, &stdout, &stderr) }()

	var addr string
	eventually.True(t, func() bool {
		select {
		case code := <-done:
			t.Fatalf("run returned %d before listening:\n%s", code, stderr.String())
		default:
		}
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	}, "not listening: %v", later(stderr.String))
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}

	cancel()
	start := time.Now()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run = %d after cancel, want 0:\n%s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not return within 5s of cancel:\n%s", stderr.String())
	}
	t.Logf("shut down in %v", time.Since(start))
	if !strings.Contains(stderr.String(), "wecombot stopped") {
		t.Errorf("no stop logged:\n%s", stderr.String())
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after run returned", addr)
	}
	for _, s := range append(cfgSecrets, "sk-serve") {
		if strings.Contains(stderr.String(), s) {
			t.Errorf("log shows secret %q:\n%s", s, stderr.String())
		}
	}
}

func TestRunServeCannotListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := writeConfig(t, serveYAML(ln.Addr().String(), "http://127.0.0.1:1", "http://127.0.0.1:1"))
	code, _, stderr := runCmd(t, "serve", "-config", path)
	if code != 1 || !strings.Contains(stderr, "listen on "+ln.Addr().String()) {
		t.Fatalf("serve on a taken port = %d\nstderr: %s", code, stderr)
	}
}

// TestRunServeLogsWarnings: serve logs each warning once, at start, and
// starts anyway (here it stops at the taken port, after the warning).
func TestRunServeLogsWarnings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	yml := strings.Replace(serveYAML(ln.Addr().String(), "http://127.0.0.1:1", "http://127.0.0.1:1"), `http://127.0.0.1:1/v1"`, `http://127.0.0.1:1"`, 1)
	code, _, stderr := runCmd(t, "serve", "-config", writeConfig(t, yml))
	const warning = "config: llm.base_url: the path does not end in /v1; OpenAI-compatible APIs usually need it (http://127.0.0.1:1/v1)"
	if code != 1 || strings.Count(stderr, warning) != 1 || !strings.Contains(stderr, "listen on "+ln.Addr().String()) {
		t.Fatalf("serve = %d, want 1 after one warning\nstderr: %s", code, stderr)
	}
}
