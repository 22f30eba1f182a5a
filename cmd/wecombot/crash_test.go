package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// binary is cmd/wecombot as it ships (Dockerfile, README: with the
// nomsgpack tag), built once per test binary into the folder TestMain
// made.
var binary struct {
	dir  string
	once sync.Once
	path string
	err  error
}

// buildBinary returns the path of the built binary, building it on first
// use.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	binary.once.Do(func() {
		path := filepath.Join(binary.dir, "wecombot")
		out, err := exec.Command("go", "build", "-tags", "nomsgpack", "-o", path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binary.path = path
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// freeAddr is a loopback address with a port free at the moment, for a
// process started next to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is the real binary running under a test.
type process struct {
	cmd  *exec.Cmd
	addr string
}

func startBinary(t *testing.T, bin, cfgPath, addr string) *process {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	cmd.Env = append(os.Environ(), "TEST_LLM_KEY=sk-test-key")
	logf, err := os.OpenFile(cfgPath+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, addr: addr}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually.Within(withLog{t, cfgPath + ".log"}, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "binary did not come up on %s", addr)
	return p
}

// withLog adds the log of a process to a failure's message.
type withLog struct {
	testing.TB
	path string
}

func (w withLog) Fatalf(format string, args ...any) {
	w.TB.Helper()
	log, _ := os.ReadFile(w.path)
	w.TB.Fatalf(format+"\nlog %s:\n%s", append(args, w.path, log)...)
}

// crashSetup serves a model that answers "answer to <question>", slowly
// (1.5 s) until slow is cleared, and writes the configuration of one app,
// helpdesk, on a SQLite file, with extra appended to the bot's keys.
func crashSetup(t *testing.T, wecomAPI, aesKey, extra string) (slow *atomic.Bool, fake *llmtest.Server, addr, cfgPath string) {
	t.Helper()
	slow = new(atomic.Bool)
	slow.Store(true)
	fake = llmtest.New(func(r llmtest.Request) llmtest.Reply {
		reply := llmtest.Reply{Content: "answer to " + lastUser(r)}
		if slow.Load() {
			reply.Delay = 1500 * time.Millisecond
		}
		return reply
	})
	llmSrv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); llmSrv.Close() })
	dir := t.TempDir()
	addr = freeAddr(t)
	cfgPath = filepath.Join(dir, "config.yaml")
	yml := fmt.Sprintf(`
server: {addr: %q}
storage: {dsn: %q}
wecom: {api_base: %q}
llm: {base_url: %q, api_key: "${TEST_LLM_KEY}", model: m, timeout: 10s, max_concurrency: 4}
admin: {password: pw}
bots:
  - name: helpdesk
    corp_id: %q
    agent_id: %d
    secret: %q
    token: %q
    encoding_aes_key: %q
%s`, addr, filepath.Join(dir, "db", "wecombot.db"), wecomAPI, llmSrv.URL+"/v1", testCorp, testAgent, testSecret, testToken, aesKey, extra)
	if err := os.WriteFile(cfgPath, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return slow, fake, addr, cfgPath
}

// TestKill9LosesNothingAndRepeatsNothing kills the real binary with SIGKILL
// while answers are in flight, restarts it, and checks that every message got
// exactly one answer.
func TestKill9LosesNothingAndRepeatsNothing(t *testing.T) {
	bin := buildBinary(t)
	aesKey := wecomsim.NewEncodingAESKey()
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})
	simSrv := httptest.NewServer(sim.Handler())
	defer simSrv.Close()
	slow, fake, addr, cfgPath := crashSetup(t, simSrv.URL, aesKey, "")
	p := startBinary(t, bin, cfgPath, addr)
	cb := &wecomsim.Callback{URL: "http://" + addr + "/wecom/helpdesk/callback", Token: testToken, EncodingAESKey: aesKey, CorpID: testCorp}

	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	var questions []string
	msgID := int64(9000)
	post := func(user, q string) {
		t.Helper()
		msgID++
		status, body, err := cb.Post(context.Background(), wecomsim.TextXML(testCorp, user, q, msgID, time.Now().Unix(), testAgent))
		if err != nil || status != 200 || body != "" {
			t.Fatalf("callback %s/%s: %d %q %v", user, q, status, body, err)
		}
	}
	for round := range 2 {
		for _, u := range users {
			q := fmt.Sprintf("%s question %d", u, round)
			questions = append(questions, q)
			post(u, q)
		}
	}
	// Kill when some answers are out and others are with the LLM.
	wait, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sim.WaitDelivered(wait, 2); err != nil {
		t.Fatalf("2 answers before the kill: %v (%d delivered, %d LLM calls)", err, len(sim.Delivered()), fake.Calls())
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	t.Logf("killed with %d LLM calls started and %d answers delivered", fake.Calls(), len(sim.Delivered()))

	slow.Store(false)
	startBinary(t, bin, cfgPath, addr)
	// One more message per user: answers are in order per user, so once
	// these arrive, every earlier answer (and any duplicate) has too.
	for _, u := range users {
		post(u, u+" last")
	}
	eventually.Within(withLog{t, cfgPath + ".log"}, 30*time.Second, func() bool {
		done := 0
		for _, s := range sim.Delivered() {
			if strings.HasSuffix(s.Content, " last") {
				done++
			}
		}
		return done == len(users)
	}, "the last answers of %d users did not all arrive", len(users))
	count := map[string]int{}
	for _, s := range sim.Delivered() {
		count[s.Content]++
	}
	for _, q := range questions {
		if n := count["answer to "+q]; n != 1 {
			t.Errorf("%q answered %d times, want exactly 1", q, n)
		}
	}
	t.Logf("delivered %d, dropped by WeCom's duplicate check %d", len(sim.Delivered()), len(sim.Dropped()))
}
