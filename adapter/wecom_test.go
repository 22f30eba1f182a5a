package adapter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHint(t *testing.T) {
	refused := newAPIClient("http://127.0.0.1:1", time.Second)
	_, _, connErr := refused.getToken(context.Background(), "ww", "secret-value")
	// A server that never answers: the client gives up at its timeout.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	_, _, timeoutErr := newAPIClient(slow.URL, 50*time.Millisecond).getToken(context.Background(), "ww", "secret-value")
	cases := []struct {
		err  error
		want string
	}{
		{&APIError{API: "gettoken", Code: 60020, Msg: "not allow to access from your ip, hint: [x], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"}, "203.0.113.7"},
		{&APIError{API: "gettoken", Code: 40001, Msg: "invalid credential"}, "bots[].secret"},
		{&APIError{API: "gettoken", Code: 40013, Msg: "invalid corpid"}, "bots[].corp_id"},
		{&APIError{API: "gettoken", Code: 48002, Msg: "api forbidden"}, "permissions"},
		{fmt.Errorf("wrapped: %w", &APIError{Code: 45009}), "rate limiting"},
		{&HTTPError{API: "message/send", Status: 502}, "HTTP 502"},
		{connErr, "cannot be reached"},
		{timeoutErr, "did not answer in time"},
		{errors.New("something else"), ""},
	}
	for _, c := range cases {
		got := Hint(c.err)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("Hint(%v) = %q, want it to contain %q", c.err, got, c.want)
		}
		if c.err != nil && strings.Contains(c.err.Error(), "secret-value") {
			t.Errorf("error carries the secret: %v", c.err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"Get \"https://qyapi.weixin.qq.com/cgi-bin/gettoken?corpid=ww&corpsecret=S3CR3T\": dial tcp": "Get \"https://qyapi.weixin.qq.com/cgi-bin/gettoken?corpid=ww&corpsecret=***\": dial tcp",
		"/cgi-bin/message/send?access_token=abc.DEF-123&debug=1":                                     "/cgi-bin/message/send?access_token=***&debug=1",
		"ACCESS_TOKEN=x y": "ACCESS_TOKEN=*** y",
		"nothing to hide":  "nothing to hide",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAPIClientKeepsItsConnections: 16 sends at a time, 5 rounds, through
// one client: its connections are reused, not dialled anew each round as
// with net/http's default of 2 idle connections per host.
func TestAPIClientKeepsItsConnections(t *testing.T) {
	const atOnce, rounds = 16, 5
	// The server answers the sends of a round once all of them have
	// arrived: they are in flight together, each on a connection.
	var mu sync.Mutex
	arrived, roundDone := 0, make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		all := roundDone
		if arrived++; arrived == atOnce {
			close(roundDone)
			arrived, roundDone = 0, make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-all:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, `{"errcode":0,"errmsg":"ok","msgid":"m1"}`)
	}))
	var dialled atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialled.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newAPIClient(srv.URL, 5*time.Second)
	for range rounds {
		var wg sync.WaitGroup
		for range atOnce {
			wg.Go(func() {
				if id, err := c.sendMessage(context.Background(), "tok", []byte(`{}`)); err != nil || id != "m1" {
					t.Errorf("sendMessage = %q, %v", id, err)
				}
			})
		}
		wg.Wait()
	}
	if n := dialled.Load(); n > 40 { // slack over 16: a connection goes back to the pool just after its answer is read; the default transport dials 72
		t.Fatalf("%d connections for %d sends, %d at a time", n, atOnce*rounds, atOnce)
	}
}
