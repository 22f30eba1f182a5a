package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// instances are pipelines sharing one database, as instances on Postgres
// do; each has its own lease owner name. Like pipelineEnv, they run in a
// synctest bubble, on a fake clock that the database reads too.
type instances struct {
	t     *testing.T
	db    *storage.DB
	clock *clockwork.FakeClock
	ps    []*Pipeline
	keys  int
}

func newInstances(t *testing.T, n int, complete func(context.Context, []llm.Message) (string, error)) *instances {
	t.Helper()
	db := openTestDB(t)
	in := &instances{t: t, db: db, clock: clockwork.NewFakeClock()}
	db.Now = in.clock.Now
	for i := range n {
		cfg := PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 10}, Replies: testReplies, Owner: fmt.Sprint("instance-", i), Lease: 3 * time.Second}
		p := NewPipeline(cfg, db, &completerFake{complete: complete}, &notifyCounter{}, in.clock, slog.New(slog.DiscardHandler))
		if err := p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.Shutdown(ctx)
		})
		in.ps = append(in.ps, p)
	}
	return in
}

func (in *instances) accept(i int, user, content string) int64 {
	in.t.Helper()
	in.keys++
	m := Inbound{Bot: "b", UserID: user, MsgType: "text", Content: content, DedupeKey: fmt.Sprint("k", in.keys)}
	if ok, err := in.ps[i].Accept(in.t.Context(), m); err != nil || !ok {
		in.t.Fatalf("Accept on %d: %v %v", i, ok, err)
	}
	return int64(in.keys)
}

// answered checks, once every instance is idle, that the messages ids have
// their answers (stored, or in the outbox).
func (in *instances) answered(ids ...int64) {
	in.t.Helper()
	synctest.Wait()
	for _, id := range ids {
		m, err := in.db.GetMessage(in.t.Context(), id)
		if err != nil {
			in.t.Fatal(err)
		}
		parts, err := in.db.PartsOf(in.t.Context(), id)
		if err != nil {
			in.t.Fatal(err)
		}
		if len(parts) == 0 && m.State != storage.MessageAnswered && m.State != storage.MessageFailed {
			in.t.Fatalf("message %d still %s with every instance idle", id, m.State)
		}
	}
}

// answerWithCount answers q with how many messages the model was asked
// with: the history it saw, and the question.
func answerWithCount(q string, msgs []llm.Message) string {
	return fmt.Sprintf("answer to %s after %d messages", q, len(msgs))
}

// A user's messages accepted by different instances are answered one at a
// time, in order, each seeing the ones before: the user is claimed as a
// unit, whichever instance holds the message. Each call is held until every
// instance has done what it could meanwhile (synctest.Wait): those that did
// not get the user have tried.
func TestLeasesKeepOrderAcrossInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		gate.answer = answerWithCount
		in := newInstances(t, 3, gate.complete)
		var ids []int64
		for i := range 12 {
			ids = append(ids, in.accept(i%3, "u", fmt.Sprint("q", i)))
		}
		for range 12 {
			synctest.Wait()
			gate.release(t)
		}
		in.answered(ids...)
		turns, err := in.db.History(t.Context(), "b", "u", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(turns) != 24 {
			t.Fatalf("%d turns, want 24", len(turns))
		}
		for i := range 12 {
			q, a := turns[2*i], turns[2*i+1]
			if q.Content != fmt.Sprint("q", i) || a.Content != fmt.Sprintf("answer to q%d after %d messages", i, min(2*i, 20)+1) { // history: 10 pairs
				t.Fatalf("turn %d: %q / %q", i, q.Content, a.Content)
			}
		}
		if _, maxTotal, _ := gate.stats(); maxTotal != 1 {
			t.Fatalf("%d calls for one user at once across instances", maxTotal)
		}
	})
}

// An instance that dies holding a user leaves a lease; when it expires,
// another instance's sweeper takes the user's messages over.
func TestLeaseTakeoverAfterOwnerDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := newInstances(t, 1, echoAnswer)
		ctx := t.Context()
		// What the dead instance left: a claimed user with two pending messages.
		u := storage.UserRef{Bot: "b", UserID: "orphan"}
		if ok, err := in.db.ClaimUser(ctx, u, "dead-instance", in.clock.Now().Add(3*time.Second)); err != nil || !ok {
			t.Fatal(ok, err)
		}
		var ids []int64
		for i := range 2 {
			m := &storage.Message{Bot: "b", DedupeKey: fmt.Sprint("dead-", i), UserID: "orphan", MsgType: "text", Content: fmt.Sprint("o", i)}
			if ok, err := in.db.InsertMessage(ctx, m); err != nil || !ok {
				t.Fatal(ok, err)
			}
			ids = append(ids, m.ID)
		}
		// Not before the lease expires: the owner may be alive and working.
		// The sweeper looks every third of a lease.
		in.clock.Advance(time.Second)
		synctest.Wait()
		if parts, _ := in.db.PartsOf(ctx, ids[0]); len(parts) != 0 {
			t.Fatal("a live lease was overridden")
		}
		in.clock.Advance(3 * time.Second)
		in.answered(ids...)
		for i, id := range ids {
			parts, _ := in.db.PartsOf(ctx, id)
			if len(parts) != 1 || parts[0].Content != fmt.Sprint("answer to o", i) {
				t.Fatalf("message %d: parts %+v", id, parts)
			}
		}
	})
}

// Exclusive instances (SQLite) drop the leases of their previous run at
// start instead of waiting for them to expire. The pipeline runs on the
// real clock, the bubble's.
func TestExclusiveStartDropsOldLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openTestDB(t)
		ctx := t.Context()
		u := storage.UserRef{Bot: "b", UserID: "u"}
		if _, err := db.ClaimUser(ctx, u, "previous-run", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		m := &storage.Message{Bot: "b", DedupeKey: "k", UserID: "u", MsgType: "text", Content: "left"}
		if _, err := db.InsertMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		p := NewPipeline(PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1}, Exclusive: true, Replies: testReplies}, db, &completerFake{complete: echoAnswer},
			&notifyCounter{}, nil, slog.New(slog.DiscardHandler))
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		synctest.Wait()
		if parts, _ := db.PartsOf(ctx, m.ID); len(parts) != 1 || !strings.Contains(parts[0].Content, "left") {
			t.Fatalf("the message left by the previous run was not resumed at start: parts %+v", parts)
		}
	})
}

// Without leases (exclusive database), one user's messages, accepted while
// earlier ones are answered, are still answered once each, one at a time,
// in order, each seeing the ones before.
func TestExclusiveKeepsOrderWithoutLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		gate.answer = answerWithCount
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 50}, Exclusive: true, Replies: testReplies}, gate.complete)
		if err := e.p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		ids := []int64{e.text("u", "q0")}
		if q := gate.next(t); q != "q0" {
			t.Fatalf("first call %q, want q0", q)
		}
		for i := 1; i < 10; i++ { // while q0 is being answered
			ids = append(ids, e.text("u", fmt.Sprint("q", i)))
		}
		for i := range 10 {
			gate.quiet(t)
			gate.release(t)
			if i < 9 {
				if q := gate.next(t); q != fmt.Sprint("q", i+1) {
					t.Fatalf("call %d asks %q, want q%d", i+2, q, i+1)
				}
			}
		}
		for _, id := range ids {
			e.done(id)
		}
		h := e.history("u")
		if len(h) != 20 {
			t.Fatalf("%d turns, want 20: %q", len(h), h)
		}
		for i := range 10 {
			if want := fmt.Sprintf("assistant: answer to q%d after %d messages", i, 2*i+1); h[2*i+1] != want {
				t.Fatalf("turn %d %q, want %q", i, h[2*i+1], want)
			}
		}
		if left, _, err := e.db.UnclaimedUsers(t.Context(), time.Now(), 0, 10); err != nil || len(left) != 0 {
			t.Fatalf("users with pending messages left: %+v %v", left, err)
		}
	})
}

// On an exclusive database a user's pending messages are read several at
// once. One cut off while streaming (a previous run's) is answered only
// as read afresh: here its delivery fails while the message before it is
// answered, and it gets no interrupted notice on top of its failure; the
// messages around it are each answered once, in order.
func TestExclusiveBatchRereadsStreamingMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 10}, Exclusive: true, Replies: testReplies}, gate.complete)
		ctx := t.Context()
		insert := func(content string) int64 {
			m := &storage.Message{Bot: "b", DedupeKey: "prev-" + content, UserID: "x", MsgType: "text", Content: content}
			if ok, err := e.db.InsertMessage(ctx, m); !ok || err != nil {
				t.Fatalf("InsertMessage = %v, %v", ok, err)
			}
			return m.ID
		}
		x1 := insert("x-1")
		x2 := insert("x-2")
		if err := e.db.AppendParts(ctx, x2, "b", "x", []string{"Para one.\n\n"}); err != nil {
			t.Fatal(err) // x2 was streaming when the previous run stopped
		}
		x3 := insert("x-3")
		e.keys.Store(3)

		if err := e.p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if q := gate.next(t); q != "x-1" {
			t.Fatalf("first call %q, want x-1", q)
		}
		ps, err := e.db.PartsOf(ctx, x2)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.FailPart(ctx, ps[0].ID, "errcode 81013: user not found"); err != nil {
			t.Fatal(err)
		}
		gate.release(t)
		if q := gate.next(t); q != "x-3" {
			t.Fatalf("second call %q, want x-3", q)
		}
		gate.release(t)
		for _, id := range []int64{x1, x3} {
			if got := e.parts(e.done(id).ID); len(got) != 1 || got[0] != "answer to "+e.message(id).Content {
				t.Errorf("message %d parts %q", id, got)
			}
		}
		if m := e.message(x2); m.State != storage.MessageFailed || len(e.parts(x2)) != 1 {
			t.Errorf("the failed streamed message became %q with parts %q", m.State, e.parts(x2))
		}
		if got, want := e.history("x"), []string{"user: x-1", "assistant: answer to x-1", "user: x-3", "assistant: answer to x-3"}; !slices.Equal(got, want) {
			t.Errorf("history %q, want %q", got, want)
		}
		_, _, asked := gate.stats()
		if got := asked["x"]; !slices.Equal(got, []string{"x-1", "x-3"}) {
			t.Errorf("asked %q", got)
		}
	})
}

// On an exclusive database a message is not marked answering before its
// answer: one whose process died while the model wrote it is still
// received, and is answered once after the restart, before the messages
// queued behind it. One cut off while streaming (its first part stored
// from the received state) gets the interrupted notice instead of a
// second answer.
func TestExclusiveCrashMidAnswerResumes(t *testing.T) {
	t.Run("complete", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			gate := newLLMGate()
			e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 10}, Exclusive: true, Replies: testReplies}, gate.complete)
			a1, a2, a3 := e.text("a", "a-1"), e.text("a", "a-2"), e.text("a", "a-3")
			if q := gate.next(t); q != "a-1" {
				t.Fatalf("first call %q, want a-1", q)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the process dies: the call in flight is cut off
			if err := e.p.Shutdown(ctx); err == nil {
				t.Fatal("Shutdown returned nil with a call in flight and no time left")
			}
			for _, id := range []int64{a1, a2, a3} {
				if m := e.message(id); m.State != storage.MessageReceived || len(e.parts(id)) != 0 {
					t.Fatalf("message %d after the crash: %q, parts %q", id, m.State, e.parts(id))
				}
			}
			e.llm.complete = echoAnswer
			e.start()
			if err := e.p.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			for _, id := range []int64{a1, a2, a3} {
				if got := e.parts(e.done(id).ID); len(got) != 1 || got[0] != "answer to "+e.message(id).Content {
					t.Errorf("message %d parts %q", id, got)
				}
			}
			want := []string{"user: a-1", "assistant: answer to a-1", "user: a-2", "assistant: answer to a-2", "user: a-3", "assistant: answer to a-3"}
			if got := e.history("a"); !slices.Equal(got, want) {
				t.Errorf("history %q, want %q", got, want)
			}
		})
	})
	t.Run("stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, HistoryTurns: 10, Stream: true}, Exclusive: true, Replies: testReplies}
			cfg.Replies.Interrupted = "interrupted, ask again"
			e, f := newStreamEnv(t, cfg)
			id := e.text("u", "q")
			next := e.text("u", "q2")
			f.pieces <- "Para one.\n\n"
			e.waitParts(id, 1)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := e.p.Shutdown(ctx); err == nil {
				t.Fatal("Shutdown returned nil with a stream in flight and no time left")
			}
			if m := e.message(id); m.State != storage.MessageStreaming {
				t.Fatalf("state %q after the crash", m.State)
			}
			e.start()
			if err := e.p.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			f.pieces <- "Answer two."
			f.end <- nil
			e.done(next)
			if got := e.parts(id); !slices.Equal(got, []string{"Para one.\n\n", "interrupted, ask again"}) {
				t.Fatalf("parts %q", got)
			}
			if got := e.parts(next); !slices.Equal(got, []string{"Answer two."}) {
				t.Fatalf("parts of the next message %q", got)
			}
			if n := f.calls.Load(); n != 2 {
				t.Fatalf("%d calls to the model, want 2 (none again for the cut-off answer)", n)
			}
		})
	})
}
