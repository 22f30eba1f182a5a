package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/redistest"
)

// instances are pipelines sharing one database, as instances on Postgres
// do; each has its own lease owner name.
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
		cfg := PipelineConfig{MaxConcurrency: 4, HistoryTurns: 10, Replies: testReplies, Owner: fmt.Sprint("instance-", i), Lease: 3 * time.Second}
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

func (in *instances) waitAnswered(ids ...int64) {
	in.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for {
			m, err := in.db.GetMessage(in.t.Context(), id)
			if err != nil {
				in.t.Fatal(err)
			}
			parts, _ := in.db.PartsOf(in.t.Context(), id)
			if len(parts) > 0 || m.State == storage.MessageAnswered || m.State == storage.MessageFailed {
				break
			}
			if time.Now().After(deadline) {
				in.t.Fatalf("message %d still %s", id, m.State)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// A user's messages accepted by different instances are answered one at a
// time, in order, each seeing the ones before: the user is claimed as a
// unit, whichever instance holds the message.
func TestLeasesKeepOrderAcrossInstances(t *testing.T) {
	var mu sync.Mutex
	inflight, maxInflight := 0, 0
	in := newInstances(t, 3, func(ctx context.Context, msgs []llm.Message) (string, error) {
		mu.Lock()
		inflight++
		maxInflight = max(maxInflight, inflight)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // long enough for the others to try
		mu.Lock()
		inflight--
		mu.Unlock()
		return fmt.Sprintf("answer to %s after %d messages", msgs[len(msgs)-1].Content, len(msgs)), nil
	})
	var ids []int64
	for i := range 12 {
		ids = append(ids, in.accept(i%3, "u", fmt.Sprint("q", i)))
	}
	in.waitAnswered(ids...)
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
	if maxInflight != 1 {
		t.Fatalf("%d calls for one user at once across instances", maxInflight)
	}
}

// An instance that dies holding a user leaves a lease; when it expires,
// another instance's sweeper takes the user's messages over.
func TestLeaseTakeoverAfterOwnerDies(t *testing.T) {
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
	in.clock.Advance(time.Second)
	time.Sleep(50 * time.Millisecond)
	if parts, _ := in.db.PartsOf(ctx, ids[0]); len(parts) != 0 {
		t.Fatal("a live lease was overridden")
	}
	in.clock.Advance(3 * time.Second)
	in.waitAnswered(ids...)
	for i, id := range ids {
		parts, _ := in.db.PartsOf(ctx, id)
		if len(parts) != 1 || parts[0].Content != fmt.Sprint("answer to o", i) {
			t.Fatalf("message %d: parts %+v", id, parts)
		}
	}
}

// Exclusive instances (SQLite) drop the leases of their previous run at
// start instead of waiting for them to expire.
func TestExclusiveStartDropsOldLeases(t *testing.T) {
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
	p := NewPipeline(PipelineConfig{MaxConcurrency: 1, Exclusive: true, Replies: testReplies}, db, &completerFake{complete: echoAnswer},
		&notifyCounter{}, nil, slog.New(slog.DiscardHandler))
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		if parts, _ := db.PartsOf(ctx, m.ID); len(parts) == 1 && strings.Contains(parts[0].Content, "left") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the message left by the previous run was not resumed at start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With a database each (SQLite) and one Redis, a message is stored by the
// first instance that claims it; the retry on another instance is refused
// while the first stores it and dropped once it has. Without Redis, each
// instance still dedupes on its own database.
func TestRedisClaimsAcrossDatabases(t *testing.T) {
	r := redistest.Start(t)
	rc := storage.OpenRedis(r.Addr)
	defer rc.Close()
	var ps []*Pipeline
	for range 2 {
		db := openTestDB(t)
		p := NewPipeline(PipelineConfig{MaxConcurrency: 1, Exclusive: true, Replies: testReplies}, db, &completerFake{complete: echoAnswer},
			&notifyCounter{}, nil, slog.New(slog.DiscardHandler))
		p.UseClaims(rc)
		ps = append(ps, p)
	}
	in := Inbound{Bot: "b", UserID: "u", MsgType: "text", Content: "hi", DedupeKey: "msg-1"}
	if ok, err := ps[0].Accept(t.Context(), in); !ok || err != nil {
		t.Fatalf("first delivery: %v %v", ok, err)
	}
	if ok, err := ps[1].Accept(t.Context(), in); ok || err != nil {
		t.Fatalf("the retry on the other instance: %v %v; want a dropped duplicate", ok, err)
	}
	// Another instance is storing msg-2 right now (its claim is pending).
	if claimed, _, err := rc.ClaimMessage(t.Context(), "wecombot:msg:b:msg-2", time.Minute); !claimed || err != nil {
		t.Fatal(claimed, err)
	}
	in.DedupeKey = "msg-2"
	if _, err := ps[1].Accept(t.Context(), in); err != ErrInFlight {
		t.Fatalf("a retry while the first delivery is being stored: %v, want ErrInFlight", err)
	}
	// Redis down: each database still dedupes its own retries.
	r.Stop()
	in.DedupeKey = "msg-3"
	for i, want := range []bool{true, false} {
		if ok, err := ps[0].Accept(t.Context(), in); ok != want || err != nil {
			t.Fatalf("delivery %d with Redis down: %v %v", i, ok, err)
		}
	}
}

// Without leases (exclusive database), one user's messages, accepted while
// earlier ones are answered, are still answered once each, in order.
func TestExclusiveKeepsOrderWithoutLeases(t *testing.T) {
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, HistoryTurns: 50, Exclusive: true, Replies: testReplies},
		func(ctx context.Context, msgs []llm.Message) (string, error) {
			time.Sleep(2 * time.Millisecond)
			return fmt.Sprintf("answer to %s after %d messages", msgs[len(msgs)-1].Content, len(msgs)), nil
		})
	if err := e.p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 10 {
		ids = append(ids, e.text("u", fmt.Sprint("q", i)))
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
	if left, err := e.db.UnclaimedUsers(t.Context(), time.Now(), 10); err != nil || len(left) != 0 {
		t.Fatalf("users with pending messages left: %+v %v", left, err)
	}
}
