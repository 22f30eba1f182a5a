package adapter

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/redistest"
)

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
		p := NewPipeline(PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1}, Exclusive: true, Replies: testReplies}, db, &completerFake{complete: echoAnswer},
			&notifyCounter{}, nil, slog.New(slog.DiscardHandler))
		p.UseClaims(rc)
		t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
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
