package llm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/llm/llmtest"
)

func newClient(t *testing.T, respond func(llmtest.Request) llmtest.Reply, timeout time.Duration) (*Client, *llmtest.Server) {
	t.Helper()
	fake := llmtest.New(respond)
	fake.RequireKey("sk-secret-key")
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); srv.Close() })
	return New(Config{BaseURL: srv.URL + "/v1/", APIKey: "sk-secret-key", Model: "m", Timeout: timeout}), fake
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
