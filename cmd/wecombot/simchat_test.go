package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
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

// A `wecombot serve` whose api_base is a separate simulator (its Handler on
// a server of its own, as `wecombot simulate` runs it) gets the panel's chat
// page, reading the answers through the simulator's inspection endpoints.
func TestChatPageForAServiceOnTheSimulator(t *testing.T) {
	e := newEnv(t, llmtest.Echo)
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
		"Answer delivered to message/send (1 part(s))", "echo: hello simulator"} {
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

// notSimulator starts the service with api_base at a server that is not the
// simulator and reports how long Open took.
func notSimulator(t *testing.T, api http.Handler) (*env, time.Duration) {
	t.Helper()
	e := prepareEnv(t, api, llmtest.Echo)
	begin := time.Now()
	e.start()
	return e, time.Since(begin)
}

func TestNoChatPageWithoutTheSimulator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request, release <-chan struct{})
	}{
		{"plain server", func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) { http.NotFound(w, r) }},
		{"another simulator", func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"simulator":"something-else","delivered":0}`)
		}},
		{"server that never answers", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var probes atomic.Int32
			release := make(chan struct{})
			e, took := notSimulator(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == wecomsim.InfoPath {
					probes.Add(1)
				}
				tc.answer(w, r, release)
			}))
			t.Cleanup(func() { close(release) }) // before the server's Close, which waits for its handlers
			if n := probes.Load(); n != 1 {
				t.Errorf("api_base was asked %d times whether it is the simulator, want once", n)
			}
			// The probe's timeout, plus ample time for a start under -race.
			if limit := probeTimeout + 2*time.Second; took > limit {
				t.Errorf("the start took %v, more than %v", took, limit)
			}
			p := loginPanel(t, "http://"+e.m.Addr)
			if code, _ := p.get("/admin/chat"); code != http.StatusNotFound {
				t.Errorf("GET /admin/chat: %d, want 404", code)
			}
			if _, home := p.get("/admin/?lang=en"); strings.Contains(home, `href="/admin/chat"`) {
				t.Error("the menu links to a chat page")
			}
		})
	}
}

func TestProbeSimulator(t *testing.T) {
	sim := httptest.NewServer(wecomsim.New(wecomsim.Options{}).Handler())
	t.Cleanup(sim.Close)
	ctx := context.Background()
	if !probeSimulator(ctx, sim.URL) || !probeSimulator(ctx, sim.URL+"/") {
		t.Error("the simulator is not recognised")
	}
	for _, base := range []string{"", "not a url", "ftp://127.0.0.1:1", "https://qyapi.weixin.qq.com", "http://127.0.0.1:1"} {
		start := time.Now()
		if probeSimulator(ctx, base) {
			t.Errorf("%q is taken for the simulator", base)
		}
		if d := time.Since(start); d > probeTimeout+500*time.Millisecond {
			t.Errorf("probing %q took %v", base, d)
		}
	}
	for addr, want := range map[string]string{"127.0.0.1:8080": "http://127.0.0.1:8080", ":8080": "http://127.0.0.1:8080",
		"0.0.0.0:8080": "http://127.0.0.1:8080", "[::]:8080": "http://127.0.0.1:8080", "[::1]:9": "http://[::1]:9"} {
		if got := serviceURL(addr); got != want {
			t.Errorf("serviceURL(%q) = %q, want %q", addr, got, want)
		}
	}
}
