package adapter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

func TestPipelineEvents(t *testing.T) {
	tests := []struct {
		event, welcome string
		parts          []string
	}{
		{"subscribe", "welcome!", []string{"welcome!"}},
		{"enter_agent", "欢迎使用", []string{"欢迎使用"}},
		{"subscribe", "", nil},
		{"enter_agent", "", nil},
		{"unsubscribe", "welcome!", nil},
		{"click", "welcome!", nil},
		{"LOCATION", "welcome!", nil},
	}
	for _, tt := range tests {
		t.Run(tt.event+"/"+tt.welcome, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				replies := testReplies
				replies.Welcome = tt.welcome
				e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 2}, Replies: replies}, func(context.Context, []llm.Message) (string, error) {
					t.Error("an event reached the LLM")
					return "", errors.New("no")
				})
				if err := e.p.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
				id := e.send(Inbound{UserID: "u", MsgType: "event", Event: tt.event})
				m := e.done(id)
				if got := e.parts(id); !slices.Equal(got, tt.parts) {
					t.Errorf("parts %q, want %q", got, tt.parts)
				}
				wantState, wantNotify := storage.MessageAnswering, int64(1) // until the outbox delivers
				if tt.parts == nil {
					wantState, wantNotify = storage.MessageAnswered, 0
				}
				if m.State != wantState || m.Error != "" {
					t.Errorf("state %q (error %q), want %q", m.State, m.Error, wantState)
				}
				if n := e.notified(); n != wantNotify {
					t.Errorf("outbox notified %d times, want %d", n, wantNotify)
				}
			})
		})
	}
}

func TestPipelineCommandsAndNonText(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 2, HistoryTurns: 10}, Replies: testReplies}, nil)
		tests := []struct {
			msgType, content string
			parts            []string
			reset            bool
		}{
			{"text", "", []string{"say something"}, false},
			{"text", "  \n\t ", []string{"say something"}, false},
			{"text", "/reset", []string{"reset done"}, true},
			{"text", "/RESET", []string{"reset done"}, true},
			{"text", "  /Reset\n", []string{"reset done"}, true},
			{"text", "/NEW", []string{"reset done"}, true},
			{"text", "/Help", []string{"help text"}, false},
			{"image", "", []string{"text only"}, false},
			{"voice", "", []string{"text only"}, false},
			{"location", "", []string{"text only"}, false},
		}
		for i, tt := range tests {
			u := fmt.Sprint("u", i) // each case starts from its own conversation
			// A conversation to keep or clear.
			e.done(e.text(u, "hello"))
			calls := e.llm.calls.Load()
			id := e.send(Inbound{UserID: u, MsgType: tt.msgType, Content: tt.content})
			e.done(id)
			if got := e.parts(id); !slices.Equal(got, tt.parts) {
				t.Errorf("%s %q: parts %q, want %q", tt.msgType, tt.content, got, tt.parts)
			}
			if n := e.llm.calls.Load() - calls; n != 0 {
				t.Errorf("%s %q reached the LLM", tt.msgType, tt.content)
			}
			if h := e.history(u); (len(h) == 0) != tt.reset {
				t.Errorf("%s %q: history %q, reset %v", tt.msgType, tt.content, h, tt.reset)
			}
			if m := e.deliver(id); m.State != storage.MessageAnswered {
				t.Errorf("%s %q: delivered, state %q, want answered", tt.msgType, tt.content, m.State)
			}
		}
	})
}

func TestPipelineLLMRetries(t *testing.T) {
	tests := []struct {
		retries  int
		failures int // calls that fail before one succeeds
		calls    int
		answered bool
	}{
		{retries: 0, failures: 99, calls: 1},
		{retries: 2, failures: 99, calls: 3},
		{retries: 2, failures: 2, calls: 3, answered: true},
		{retries: 3, failures: 1, calls: 2, answered: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d retries, %d failures", tt.retries, tt.failures), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int64
				called := make(chan struct{}, 10)
				e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Retries: tt.retries}, Replies: testReplies},
					func(_ context.Context, msgs []llm.Message) (string, error) {
						defer func() { called <- struct{}{} }()
						if int(calls.Add(1)) <= tt.failures {
							return "", errors.New("model overloaded")
						}
						return "fine", nil
					})
				id := e.text("u", "hi")
				pause := time.Second
				for i := 1; i < tt.calls; i++ {
					select {
					case <-called:
					case <-time.After(5 * time.Second):
						t.Fatalf("call %d not made within 5s", i)
					}
					// The pipeline waits on the clock before the next attempt
					// (the other waiter is the renewal of the user lease).
					ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
					if err := e.clock.BlockUntilContext(ctx, 2); err != nil {
						t.Fatalf("no pause after call %d: %v", i, err)
					}
					cancel()
					if int(calls.Load()) != i {
						t.Fatalf("call %d made before the pause ended", i+1)
					}
					e.clock.Advance(pause)
					pause *= 2
				}
				m := e.done(id)
				if n := int(calls.Load()); n != tt.calls {
					t.Errorf("LLM called %d times, want %d", n, tt.calls)
				}
				if tt.answered {
					if got := e.parts(id); !slices.Equal(got, []string{"fine"}) || m.Error != "" {
						t.Errorf("parts %q, error %q; want the answer", got, m.Error)
					}
					return
				}
				if got := e.parts(id); !slices.Equal(got, []string{"unavailable"}) {
					t.Errorf("parts %q, want the unavailable text", got)
				}
				if h := e.history("u"); len(h) != 0 {
					t.Errorf("a failed turn entered the history: %q", h)
				}
				m = e.deliver(id)
				if m.State != storage.MessageFailed || !strings.Contains(m.Error, "model overloaded") {
					t.Errorf("after delivery: state %q error %q, want failed with the LLM's reason", m.State, m.Error)
				}
			})
		})
	}
}

// TestPipelineRateLimitedRetriedUntilAnswered: calls refused for the
// provider's rate limit are tried again after Retry-After, beyond
// llm.retries, and the user gets the answer, not the unavailable text.
func TestPipelineRateLimitedRetriedUntilAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		called := make(chan struct{}, 10)
		var calls atomic.Int64
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, Retries: 0}, Exclusive: true, Replies: testReplies},
			func(context.Context, []llm.Message) (string, error) {
				defer func() { called <- struct{}{} }()
				if calls.Add(1) <= 3 {
					return "", &llm.Error{Kind: llm.KindRateLimited, Status: 429, RetryAfter: 2 * time.Second}
				}
				return "fine", nil
			})
		id := e.text("u", "hi")
		for i := 1; i <= 3; i++ {
			<-called
			// The next call waits for the limiter's pause to end.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
				t.Fatalf("no pause after refusal %d: %v", i, err)
			}
			cancel()
			if int(calls.Load()) != i {
				t.Fatalf("call %d made during the pause", i+1)
			}
			e.clock.Advance(2 * time.Second)
		}
		m := e.done(id)
		if got := e.parts(id); !slices.Equal(got, []string{"fine"}) || m.Error != "" {
			t.Errorf("parts %q, error %q; want the answer after the rate limit", got, m.Error)
		}
	})
}

// TestPipelineRateLimitedGivesUpWhenOld: a message older than
// RateLimitWait is not kept waiting for the provider any longer.
func TestPipelineRateLimitedGivesUpWhenOld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var e *pipelineEnv
		e = newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4}, Exclusive: true, RateLimitWait: time.Minute, Replies: testReplies},
			func(context.Context, []llm.Message) (string, error) {
				e.clock.Advance(2 * time.Minute) // the provider kept it waiting
				return "", &llm.Error{Kind: llm.KindRateLimited, Status: 429}
			})
		id := e.text("u", "hi")
		e.done(id)
		if got := e.parts(id); !slices.Equal(got, []string{"unavailable"}) {
			t.Errorf("parts %q, want the unavailable text", got)
		}
		if n := e.llm.calls.Load(); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
}

// TestPipelineConfigErrorNotRetried: a bad key or model fails at once,
// whatever llm.retries says.
func TestPipelineConfigErrorNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, Retries: 3}, Exclusive: true, Replies: testReplies},
			func(context.Context, []llm.Message) (string, error) {
				return "", &llm.Error{Kind: llm.KindConfig, Status: 401}
			})
		id := e.text("u", "hi")
		m := e.done(id)
		if n := e.llm.calls.Load(); n != 1 {
			t.Errorf("%d calls, want 1 (no retry of a configuration error)", n)
		}
		if got := e.parts(id); !slices.Equal(got, []string{"unavailable"}) || !strings.Contains(m.Error, "config_error") {
			t.Errorf("parts %q error %q; want the unavailable text and the reason", got, m.Error)
		}
	})
}
