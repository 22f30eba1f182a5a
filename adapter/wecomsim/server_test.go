package wecomsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	corpID  = "ww0123456789abcdef"
	agentID = 1000002
	secret  = "helpdesk-secret"
)

// clock is a manual clock so expiry tests move time instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type apiResult struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	MsgID       string `json:"msgid"`
	InvalidUser string `json:"invaliduser"`
}

type fixture struct {
	sim   *Server
	clock *clock
	srv   *httptest.Server
	url   string // includes a path prefix, as a configured api_base would
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	clk := newClock()
	opts := Options{
		Apps: []App{
			{CorpID: corpID, AgentID: agentID, Secret: secret},
			{CorpID: corpID, AgentID: 1000003, Secret: "other-secret"},
		},
		Now: clk.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	sim := New(opts)
	ts := httptest.NewServer(sim.Handler())
	t.Cleanup(ts.Close)
	return &fixture{sim: sim, clock: clk, srv: ts, url: ts.URL + "/wecom"}
}

func (f *fixture) getToken(t *testing.T, corp, sec string) apiResult {
	t.Helper()
	q := url.Values{"corpid": {corp}, "corpsecret": {sec}}
	return f.do(t, http.MethodGet, "/cgi-bin/gettoken?"+q.Encode(), "")
}

func (f *fixture) token(t *testing.T) string {
	t.Helper()
	res := f.getToken(t, corpID, secret)
	if res.ErrCode != 0 {
		t.Fatalf("gettoken: %+v", res)
	}
	return res.AccessToken
}

func (f *fixture) send(t *testing.T, token string, body any) apiResult {
	t.Helper()
	var raw string
	if s, ok := body.(string); ok {
		raw = s
	} else {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		raw = string(b)
	}
	path := "/cgi-bin/message/send"
	if token != "" {
		path += "?access_token=" + url.QueryEscape(token)
	}
	return f.do(t, http.MethodPost, path, raw)
}

// roundTrip sends one request to the simulator and returns the HTTP status
// and the whole body.
func (f *fixture) roundTrip(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (f *fixture) do(t *testing.T, method, path, body string) apiResult {
	t.Helper()
	status, b := f.roundTrip(t, method, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d", method, path, status)
	}
	var res apiResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func text(to, content string) map[string]any {
	return map[string]any{"touser": to, "msgtype": "text", "agentid": agentID, "text": map[string]any{"content": content}}
}

func TestWaitDelivered(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)

	done := make(chan []Sent)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := f.sim.WaitDelivered(ctx, 2)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	// Plain HTTP here: t.Fatal must not run outside the test goroutine.
	send := func(content string) {
		body := fmt.Sprintf(`{"touser":"zhangsan","msgtype":"text","agentid":1000002,"text":{"content":%q}}`, content)
		resp, err := http.Post(f.url+"/cgi-bin/message/send?access_token="+tok, "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
	}
	send("one")
	send("two")
	if got := <-done; len(got) != 2 {
		t.Fatalf("WaitDelivered returned %d", len(got))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := f.sim.WaitDelivered(ctx, 3)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 2 {
		t.Fatalf("got %d, %v; want 2 and a deadline", len(got), err)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, nil)
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := url.Values{"corpid": {corpID}, "corpsecret": {secret}}
			resp, err := http.Get(f.url + "/cgi-bin/gettoken?" + q.Encode())
			if err != nil {
				t.Error(err)
				return
			}
			var tr apiResult
			err = json.NewDecoder(resp.Body).Decode(&tr)
			resp.Body.Close()
			if err != nil || tr.ErrCode != 0 {
				t.Errorf("gettoken: %v %+v", err, tr)
				return
			}
			body := fmt.Sprintf(`{"touser":"u%d","msgtype":"text","agentid":1000002,"text":{"content":"hi"}}`, i)
			resp, err = http.Post(f.url+"/cgi-bin/message/send?access_token="+tr.AccessToken, "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = f.sim.Delivered(), f.sim.Rejected(), f.sim.CurrentToken(agentID)
		}()
	}
	wg.Wait()
	got := f.sim.Delivered()
	ids := map[string]bool{}
	for _, s := range got {
		ids[s.MsgID] = true
	}
	if len(got) != n || len(ids) != n || f.sim.TokenFetches(agentID) != n {
		t.Errorf("delivered %d, unique ids %d, fetches %d; want %d each", len(got), len(ids), f.sim.TokenFetches(agentID), n)
	}
}
