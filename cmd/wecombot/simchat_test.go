package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// panelClient is logged in to the panel of the service at base.
type panelClient struct {
	t      *testing.T
	base   string
	client *http.Client
}

func loginPanel(t *testing.T, base string) *panelClient {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	p := &panelClient{t: t, base: base, client: &http.Client{Jar: jar}}
	if code, body := p.do(p.client.PostForm(base+"/admin/login", url.Values{"username": {"admin"}, "password": {testAdminPW}})); code != http.StatusOK {
		t.Fatalf("login: %d\n%s", code, body)
	}
	return p
}

func (p *panelClient) do(resp *http.Response, err error) (int, string) {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *panelClient) get(path string) (int, string) {
	p.t.Helper()
	return p.do(p.client.Get(p.base + path))
}

// apiLog is a service's wecom.api_base in a test: it passes every request
// to the API it stands for and notes the paths asked.
type apiLog struct {
	api   http.Handler
	mu    sync.Mutex
	paths []string
}

func (l *apiLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.paths = append(l.paths, r.URL.Path)
	l.mu.Unlock()
	l.api.ServeHTTP(w, r)
}

// asked returns the paths asked so far: of gettoken, and of anything else.
func (l *apiLog) asked() (gettoken int, other []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.paths {
		if strings.HasSuffix(p, "/cgi-bin/gettoken") {
			gettoken++
		} else {
			other = append(other, p)
		}
	}
	return gettoken, other
}

// startOn starts a service whose api_base is api, with wecom.simulator as
// given, waits for the access token request that every start makes (a
// production need), and returns the service, what api_base was asked by
// then, and how long Open took.
func startOn(t *testing.T, api http.Handler, simulator bool) (*env, *apiLog, time.Duration) {
	t.Helper()
	log := &apiLog{api: api}
	e := prepareEnv(t, log, llmtest.Echo)
	e.simulator = simulator
	begin := time.Now()
	e.start()
	took := time.Since(begin)
	eventually.True(t, func() bool { n, _ := log.asked(); return n > 0 }, "the service never asked api_base for a token")
	return e, log, took
}

// A `wecombot serve` whose api_base is a separate simulator (its Handler on
// a server of its own, as `wecombot simulate` runs it) and whose
// wecom.simulator says so gets the panel's chat page, reading the answers
// through the simulator's inspection endpoints; it does not ask the
// simulator anything but a token at start.
func TestChatPageForAServiceOnTheSimulator(t *testing.T) {
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})
	e, log, _ := startOn(t, sim.Handler(), true)
	e.sim = sim
	if _, other := log.asked(); len(other) != 0 {
		t.Errorf("at start the service asked api_base for %q; want only gettoken", other)
	}
	p := loginPanel(t, "http://"+e.m.Addr)
	if code, home := p.get("/admin/?lang=en"); code != http.StatusOK || !strings.Contains(home, `href="/admin/chat"`) {
		t.Fatalf("the menu has no chat page: %d\n%s", code, home)
	}
	if code, page := p.get("/admin/chat"); code != http.StatusOK {
		t.Fatalf("GET /admin/chat: %d\n%s", code, page)
	}
	// The simulator delivered something before: the chat's answer is only
	// what comes after its own callback.
	e.post(e.text("zhangsan", "earlier"))
	e.waitDelivered(1)

	chat := func(user, text string) string {
		t.Helper()
		code, page := p.do(p.client.PostForm(p.base+"/admin/chat", url.Values{"bot": {"helpdesk"}, "user": {user}, "text": {text}}))
		if code != http.StatusOK {
			t.Fatalf("POST /admin/chat: %d\n%s", code, page)
		}
		return page
	}
	page := chat("lisi", "hello simulator")
	for _, want := range []string{"Callback encrypted and signed", "POST /wecom/helpdesk/callback answered 200",
		"Answer delivered to message/send (1 part)", "echo: hello simulator"} {
		if !strings.Contains(page, want) {
			t.Errorf("the chat page lacks %q", want)
		}
	}
	if strings.Contains(page, "echo: earlier") {
		t.Error("the chat shows an answer delivered before its callback")
	}
	for name, secret := range map[string]string{"callback token": testToken, "AES key": e.aesKey, "app secret": testSecret,
		"access token": e.sim.CurrentToken(testAgent)} {
		if secret == "" || strings.Contains(page, secret) {
			t.Errorf("the chat page shows the %s (or it is empty)", name)
		}
	}
	if t.Failed() {
		t.Fatalf("page:\n%s", page)
	}
	sent := e.waitDelivered(2)
	if sent[1].ToUser != "lisi" || sent[1].Content != "echo: hello simulator" {
		t.Fatalf("delivered at the simulator: %+v", sent[1])
	}
	// The next exchange gets its own answer; the page keeps the first one.
	first := strings.Count(page, "echo: hello simulator")
	if page := chat("lisi", "two"); strings.Count(page, "echo: two") != 1 || strings.Count(page, "echo: hello simulator") != first {
		t.Fatalf("second exchange:\n%s", page)
	}
}

// Without wecom.simulator the panel has no chat page, whatever api_base
// is, and the service asks api_base for nothing but its token at start:
// not whether it is the simulator. A start does not wait for api_base.
func TestNoChatPageWithoutTheSwitch(t *testing.T) {
	for _, tc := range []struct {
		name string
		api  func(release <-chan struct{}) http.Handler
	}{
		{"the simulator", func(<-chan struct{}) http.Handler {
			return wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}}).Handler()
		}},
		{"plain server", func(<-chan struct{}) http.Handler { return http.NotFoundHandler() }},
		{"server that never answers", func(release <-chan struct{}) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			e, log, took := startOn(t, tc.api(release), false)
			t.Cleanup(func() { close(release) }) // before the server's Close, which waits for its handlers
			if _, other := log.asked(); len(other) != 0 {
				t.Errorf("at start the service asked api_base for %q; want only gettoken", other)
			}
			// wecom.request_timeout is 10s: a start that waited for an
			// answer from api_base would take that long.
			if limit := 5 * time.Second; took > limit {
				t.Errorf("the start took %v, more than %v", took, limit)
			}
			p := loginPanel(t, "http://"+e.m.Addr)
			if code, _ := p.get("/admin/chat"); code != http.StatusNotFound {
				t.Errorf("GET /admin/chat: %d, want 404", code)
			}
			if _, home := p.get("/admin/?lang=en"); strings.Contains(home, `href="/admin/chat"`) {
				t.Error("the menu links to a chat page")
			}
			if _, other := log.asked(); len(other) != 0 {
				t.Errorf("the service asked api_base for %q; want only gettoken", other)
			}
		})
	}
}

func TestServiceURL(t *testing.T) {
	for addr, want := range map[string]string{"127.0.0.1:8080": "http://127.0.0.1:8080", ":8080": "http://127.0.0.1:8080",
		"0.0.0.0:8080": "http://127.0.0.1:8080", "[::]:8080": "http://127.0.0.1:8080", "[::1]:9": "http://[::1]:9"} {
		if got := serviceURL(addr); got != want {
			t.Errorf("serviceURL(%q) = %q, want %q", addr, got, want)
		}
	}
}
