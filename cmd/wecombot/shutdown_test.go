package main

import (
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// On shutdown, the answer in progress finishes and is delivered before the
// process ends; a message still queued stays stored and is answered, once,
// after the next start.
func TestShutdownFinishesInFlightWorkAndResumesTheRest(t *testing.T) {
	e := newEnv(t, func(r llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: "answer to " + lastUser(r), Delay: 700 * time.Millisecond}
	})
	e.post(e.text("wu", "first"))
	e.post(e.text("wu", "second")) // queued behind "first": one message per user at a time
	// The fake LLM is on a real server: only the calls it saw tell.
	eventually.True(t, func() bool { return e.llm.Calls() >= 1 }, "the first message did not reach the LLM")
	if err := e.m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	delivered := e.sim.Delivered()
	if len(delivered) != 1 || delivered[0].Content != "answer to first" {
		t.Fatalf("delivered by shutdown: %+v; want the in-flight answer only", delivered)
	}
	e.start()
	sent := e.waitDelivered(2)
	if sent[1].Content != "answer to second" {
		t.Fatalf("after restart: %q", sent[1].Content)
	}
	e.post(e.text("wu", "third"))
	sent = e.waitDelivered(3)
	n := 0
	for _, s := range sent {
		if strings.HasSuffix(s.Content, "second") {
			n++
		}
	}
	if n != 1 || sent[2].Content != "answer to third" {
		t.Fatalf("answers: %+v", sent)
	}
}
