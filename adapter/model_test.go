package adapter

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// TestPipelineModelPerBot: each bot is asked with its own settings (system
// prompt) through its own model endpoint; the bots of one endpoint share
// its calls in flight (max_concurrency) and its health, and a busy or
// failing endpoint holds up and marks no other bot's.
func TestPipelineModelPerBot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var prompts []string
		var fail error
		gate := newLLMGate()
		gate.answer = func(q string, msgs []llm.Message) string { return msgs[0].Content + " " + q }
		x := &Endpoint{Model: "model-x", Host: "x.example", KeySet: true, LLM: &completerFake{complete: gate.complete}, MaxConcurrency: 1}
		cfg := PipelineConfig{
			LLM: LLMConfig{MaxConcurrency: 5, SystemPrompt: "Default."}, Replies: testReplies, Model: "model-a",
			Bots: map[string]BotModel{
				"a":  {LLM: LLMConfig{SystemPrompt: "A."}},
				"x1": {LLM: LLMConfig{SystemPrompt: "X1."}, Endpoint: x},
				"x2": {LLM: LLMConfig{SystemPrompt: "X2."}, Endpoint: x},
			},
		}
		e := newPipelineEnv(t, cfg, func(_ context.Context, msgs []llm.Message) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			prompts = append(prompts, msgs[0].Content)
			if fail != nil {
				return "", fail
			}
			return "answer", nil
		})
		x1 := e.send(Inbound{Bot: "x1", UserID: "u1", Content: "u1-q"})
		x2 := e.send(Inbound{Bot: "x2", UserID: "u2", Content: "u2-q"})
		if q := gate.next(t); q != "u1-q" {
			t.Fatalf("first call on model-x: %q", q)
		}
		gate.quiet(t) // x2 waits: model-x takes one call at once

		// Bot a's model is another: it answers meanwhile, with a's prompt.
		if id := e.send(Inbound{Bot: "a", UserID: "u3", Content: "hi"}); e.done(id).State == storage.MessageFailed || len(e.parts(id)) != 1 {
			t.Fatalf("bot a's message not answered while model-x is busy")
		}
		// A bot the pipeline has no settings of (removed from the
		// configuration) is asked with the pipeline's own.
		e.done(e.send(Inbound{Bot: "gone", UserID: "u4", Content: "hi"}))
		mu.Lock()
		if want := []string{"A.", "Default."}; len(prompts) != 2 || prompts[0] != want[0] || prompts[1] != want[1] {
			t.Errorf("the default model was asked with the prompts %q, want %q", prompts, want)
		}
		mu.Unlock()

		gate.release(t)
		if q := gate.next(t); q != "u2-q" {
			t.Fatalf("second call on model-x: %q", q)
		}
		gate.release(t)
		for id, want := range map[int64]string{x1: "X1. u1-q", x2: "X2. u2-q"} {
			e.done(id)
			if got := e.parts(id); len(got) != 1 || got[0] != want {
				t.Errorf("message %d answered %q, want %q", id, got, want)
			}
		}

		// Health per endpoint: x1 and x2 share model-x's; a failure of the
		// default model marks a's (and the pipeline's), not model-x's.
		mu.Lock()
		fail = &llm.Error{Kind: llm.KindConfig, Status: http.StatusUnauthorized}
		mu.Unlock()
		e.done(e.send(Inbound{Bot: "a", UserID: "u3", Content: "again"}))
		hx1, hx2, ha, hgone := e.p.ModelStatus("x1"), e.p.ModelStatus("x2"), e.p.ModelStatus("a"), e.p.ModelStatus("gone")
		if hx1 != hx2 || hx1.State != ModelOK || hx1.Model != "model-x" || hx1.Host != "x.example" || !hx1.KeySet {
			t.Errorf("model-x's health: x1 %+v, x2 %+v; want one, ok", hx1, hx2)
		}
		if ha != hgone || ha.State != ModelFailing || ha.Cause != llm.CauseBadKey || ha.Model != "model-a" || ha.Endpoint == hx1.Endpoint {
			t.Errorf("the default model's health: a %+v, gone %+v; want one, failing, another endpoint than %d", ha, hgone, hx1.Endpoint)
		}
		if got := len(e.p.usedEndpoints()); got != 2 {
			t.Errorf("%d endpoints used, want 2", got)
		}
	})
}
