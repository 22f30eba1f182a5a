package adapter

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
)

func TestPipelineOneUserInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 10}, Replies: testReplies}, gate.complete)
		var ids []int64
		for i := 1; i <= 5; i++ {
			ids = append(ids, e.text("a", fmt.Sprintf("a-%d", i)))
		}
		for i := 1; i <= 5; i++ {
			if q := gate.next(t); q != fmt.Sprintf("a-%d", i) {
				t.Fatalf("call %d asks %q, want a-%d", i, q, i)
			}
			gate.quiet(t) // the next message of a waits for this one
			gate.release(t)
		}
		for i, id := range ids {
			if got, want := e.parts(e.done(id).ID), []string{fmt.Sprintf("answer to a-%d", i+1)}; !slices.Equal(got, want) {
				t.Errorf("message %d parts %q, want %q", i+1, got, want)
			}
		}
		if maxUser, _, _ := gate.stats(); maxUser != 1 {
			t.Errorf("%d messages of one user ran at once", maxUser)
		}
		// Each turn saw the ones before it: the history is in arrival order.
		var want []string
		for i := 1; i <= 5; i++ {
			want = append(want, fmt.Sprintf("user: a-%d", i), fmt.Sprintf("assistant: answer to a-%d", i))
		}
		if got := e.history("a"); !slices.Equal(got, want) {
			t.Errorf("history %q, want %q", got, want)
		}
		if n := e.notified(); n != 5 {
			t.Errorf("outbox notified %d times, want 5", n)
		}
	})
}

func TestPipelineUsersConcurrentUpToMaxConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, users, each = 3, 6, 2
		gate := newLLMGate()
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: workers}, Replies: testReplies}, gate.complete)
		var ids []int64
		for i := range each {
			for u := range users {
				ids = append(ids, e.text(fmt.Sprint("u", u), fmt.Sprintf("u%d-%d", u, i)))
			}
		}
		first := map[string]bool{}
		for range workers {
			user, _, _ := strings.Cut(gate.next(t), "-")
			first[user] = true
		}
		if len(first) != workers {
			t.Fatalf("the first %d calls are of %d users, want %d different users", workers, len(first), workers)
		}
		gate.quiet(t) // no more than workers at once
		for range users*each - workers {
			gate.release(t)
			gate.next(t)
		}
		for range workers {
			gate.release(t)
		}
		for _, id := range ids {
			e.done(id)
		}
		maxUser, maxTotal, asked := gate.stats()
		if maxTotal != workers || maxUser != 1 {
			t.Errorf("at most %d calls ran at once (%d of one user), want %d (1)", maxTotal, maxUser, workers)
		}
		for u := range users {
			user := fmt.Sprint("u", u)
			if want := []string{user + "-0", user + "-1"}; !slices.Equal(asked[user], want) {
				t.Errorf("%s asked %q, want %q", user, asked[user], want)
			}
		}
	})
}
