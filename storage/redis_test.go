package storage

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wecombot/wecombot/storage/redistest"
)

func TestRedisClaimUnclaim(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a, b := OpenRedis(srv.Addr), OpenRedis(srv.Addr) // two instances
	defer a.Close()
	defer b.Close()
	const ttl = 300 * time.Millisecond // short, for a real server's clock

	claim := func(r *Redis, key string, want bool) {
		t.Helper()
		got, _, err := r.ClaimMessage(ctx, key, ttl)
		if err != nil || got != want {
			t.Fatalf("ClaimMessage(%s) = %v, %v; want %v", key, got, err, want)
		}
	}
	claim(a, "dedupe:bot:1", true)
	claim(b, "dedupe:bot:1", false) // the other instance sees the claim
	claim(a, "dedupe:bot:1", false) // and so does the claimer
	claim(b, "dedupe:bot:2", true)  // other keys are independent

	if pttl := a.c.PTTL(ctx, "dedupe:bot:1").Val(); pttl <= 0 || pttl > ttl {
		t.Fatalf("claim TTL %v, want in (0, %v]", pttl, ttl)
	}

	srv.FastForward(ttl + 100*time.Millisecond)
	claim(b, "dedupe:bot:1", true) // expired: claimable again
	claim(a, "dedupe:bot:1", false)

	// A caller whose database write failed gives the claim back, so the
	// sender's retry is not dropped as a duplicate.
	if err := b.Unclaim(ctx, "dedupe:bot:1"); err != nil {
		t.Fatal(err)
	}
	claim(a, "dedupe:bot:1", true)
	if err := a.Unclaim(ctx, "dedupe:bot:never"); err != nil {
		t.Fatalf("unclaim of a free key: %v", err)
	}
}

// Redis failing is an error, never "already claimed": a false would drop the
// message as a duplicate when the caller should fall back to the database.
func TestRedisClaimUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	srv := redistest.Start(t)
	closed := OpenRedis(srv.Addr)
	closed.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	_ = l.Close() // nothing listens there now
	unreachable := OpenRedis(down)
	defer unreachable.Close()

	for name, r := range map[string]*Redis{"closed client": closed, "unreachable server": unreachable} {
		ok, done, err := r.ClaimMessage(ctx, "dedupe:bot:1", time.Minute)
		if err == nil || ok || done {
			t.Errorf("%s: ClaimMessage = %v, %v, %v; want an error", name, ok, done, err)
		}
		if err := r.Unclaim(ctx, "dedupe:bot:1"); err == nil {
			t.Errorf("%s: Unclaim succeeded", name)
		}
	}
}

// A message claim is pending while its instance stores the message, done
// after: a retry meanwhile is refused (not dropped), a retry after is a
// duplicate, and a claim whose instance died expires.
func TestRedisClaimMessage(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a, b := OpenRedis(srv.Addr), OpenRedis(srv.Addr)
	defer a.Close()
	defer b.Close()
	const pending = 300 * time.Millisecond
	claim := func(r *Redis, key string, wantClaimed, wantDone bool) {
		t.Helper()
		claimed, done, err := r.ClaimMessage(ctx, key, pending)
		if err != nil || claimed != wantClaimed || done != wantDone {
			t.Fatalf("ClaimMessage(%s) = %v, %v, %v; want %v, %v", key, claimed, done, err, wantClaimed, wantDone)
		}
	}
	claim(a, "msg:1", true, false)
	claim(b, "msg:1", false, false) // a is still storing it
	if err := a.ConfirmMessage(ctx, "msg:1", time.Hour); err != nil {
		t.Fatal(err)
	}
	claim(b, "msg:1", false, true) // stored: a duplicate
	if pttl := a.c.PTTL(ctx, "msg:1").Val(); pttl < 59*time.Minute {
		t.Fatalf("confirmed claim TTL %v, want about the hour kept", pttl)
	}

	claim(a, "msg:2", true, false) // a dies before storing it
	srv.FastForward(pending + 100*time.Millisecond)
	claim(b, "msg:2", true, false) // the retry after the pending TTL is b's

	closed := OpenRedis(srv.Addr)
	closed.Close()
	if _, _, err := closed.ClaimMessage(ctx, "msg:3", pending); err == nil {
		t.Fatal("a closed client claimed a message")
	}
}

// A lease in Redis follows DB.ClaimUser's rules on the caller's clock: the
// holder renews, others wait for its end, only the holder drops it.
func TestRedisLease(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a, b := OpenRedis(srv.Addr), OpenRedis(srv.Addr) // two instances
	defer a.Close()
	defer b.Close()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	claim := func(r *Redis, owner string, at time.Time, want bool) {
		t.Helper()
		got, err := r.ClaimLease(ctx, "lease:bot", owner, at, at.Add(3*time.Second))
		if err != nil || got != want {
			t.Fatalf("ClaimLease(%s at %v) = %v, %v; want %v", owner, at.Sub(now), got, err, want)
		}
	}
	claim(a, "one", now, true)
	claim(b, "two", now.Add(time.Second), false)
	claim(a, "one", now.Add(2*time.Second), true) // renewed until 5 s
	claim(b, "two", now.Add(4*time.Second), false)
	if pttl := a.c.PTTL(ctx, "lease:bot").Val(); pttl <= 3*time.Second || pttl > 3*time.Second+leaseKeep {
		t.Errorf("lease key TTL %v", pttl)
	}
	claim(b, "two", now.Add(6*time.Second), true) // one's lease ended
	claim(a, "one", now.Add(6*time.Second), false)

	if err := a.DropLease(ctx, "lease:bot", "one"); err != nil {
		t.Fatal(err)
	}
	claim(a, "one", now.Add(7*time.Second), false) // not one's to drop
	if err := b.DropLease(ctx, "lease:bot", "two"); err != nil {
		t.Fatal(err)
	}
	claim(a, "one", now.Add(7*time.Second), true)
	if err := b.DropLease(ctx, "lease:none", "two"); err != nil {
		t.Fatalf("drop of a free lease: %v", err)
	}
}
