package llm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm/llmtest"
)

func newClient(t testing.TB, respond func(llmtest.Request) llmtest.Reply, timeout time.Duration) (*Client, *llmtest.Server) {
	t.Helper()
	fake := llmtest.New(respond)
	fake.RequireKey("sk-secret-key")
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); srv.Close() })
	return New(Config{BaseURL: srv.URL + "/v1/", APIKey: "sk-secret-key", Model: "m", Timeout: config.Duration(timeout)}), fake
}

func TestComplete(t *testing.T) {
	c, fake := newClient(t, nil, 5*time.Second)
	got, err := c.Complete(context.Background(), []Message{
		{Role: RoleSystem, Content: "be brief"},
		{Role: RoleUser, Content: "   "}, // an empty turn of the history is left out
		{Role: RoleAssistant, Content: "earlier"},
		{Role: RoleUser, Content: "你好"},
	})
	if err != nil || got != "echo: 你好" {
		t.Fatalf("Complete = %q, %v", got, err)
	}
	req := fake.Requests()[0]
	if req.Model != "m" || len(req.Messages) != 3 || req.Messages[1].Content != "earlier" {
		t.Fatalf("request %+v", req)
	}
}

func TestCompleteRefusesAnEmptyLastMessage(t *testing.T) {
	c, fake := newClient(t, nil, 5*time.Second)
	for _, msgs := range [][]Message{nil, {{Role: RoleUser, Content: ""}}, {{Role: RoleUser, Content: " \n"}}} {
		if _, err := c.Complete(context.Background(), msgs); !errors.Is(err, ErrEmpty) {
			t.Errorf("%v: err %v, want ErrEmpty", msgs, err)
		}
	}
	if fake.Calls() != 0 {
		t.Fatal("an empty message reached the API")
	}
}

func TestCompleteErrors(t *testing.T) {
	cases := []struct {
		name  string
		reply llmtest.Reply
		want  string
	}{
		{"server error", llmtest.Reply{Status: http.StatusInternalServerError}, "status 500"},
		{"rate limited", llmtest.Reply{Status: http.StatusTooManyRequests}, "status 429"},
		{"no text", llmtest.Reply{Content: "  "}, "no text"},
		{"hangs past the timeout", llmtest.Reply{Hang: true}, "timed out"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, _ := newClient(t, func(llmtest.Request) llmtest.Reply { return c.reply }, 300*time.Millisecond)
			start := time.Now()
			_, err := client.Complete(context.Background(), []Message{{Role: RoleUser, Content: "hi"}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "sk-secret-key") {
				t.Fatal("error carries the API key")
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("a timeout is a failure, not a hang")
			}
		})
	}
}

// TestClientKeepsItsConnections: 16 requests at a time (as many as the
// pipeline's workers), 5 rounds. net/http's default transport kept 2 idle
// connections per host and dialled 14 anew in each round; the client's own
// transport keeps them all. The fake answers none of a round before all 16
// have arrived, so every round holds 16 connections at once.
func TestClientKeepsItsConnections(t *testing.T) {
	const atOnce, rounds = 16, 5
	var (
		mu      sync.Mutex
		arrived int
		full    = make(chan struct{}) // closed when the round's last request arrives
		stop    = make(chan struct{}) // closed when the test ends
	)
	fake := llmtest.New(func(req llmtest.Request) llmtest.Reply {
		mu.Lock()
		round := full
		if arrived++; arrived == atOnce {
			close(full)
			full, arrived = make(chan struct{}), 0
		}
		mu.Unlock()
		select {
		case <-round:
		case <-stop: // a round that never fills: the requests fail, the test says so
		}
		return llmtest.Echo(req)
	})
	srv := httptest.NewUnstartedServer(fake.Handler())
	var dialled atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialled.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(func() { close(stop); fake.Close(); srv.Close() })
	c := New(Config{BaseURL: srv.URL + "/v1/", APIKey: "k", Model: "m", Timeout: config.Duration(5 * time.Second)})
	for range rounds {
		var wg sync.WaitGroup
		for range atOnce {
			wg.Go(func() {
				if _, err := c.Complete(context.Background(), []Message{{Role: RoleUser, Content: "hi"}}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	// A connection is back in the pool a moment after its response was
	// read, so a round can dial a few: slack over atOnce, far below the
	// 16+4×14 of the default transport.
	if n := dialled.Load(); n > 40 {
		t.Fatalf("%d connections for %d requests, %d at a time", n, atOnce*rounds, atOnce)
	}
}
