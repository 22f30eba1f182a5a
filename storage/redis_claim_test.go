package storage

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// claimRedis is one test's Redis: a real redis-server when one is on PATH
// (.ci/run installs it), miniredis otherwise. It is a copy of the adapter
// tests' helper, cut down: storage's tests do not import adapter.
type claimRedis struct {
	kind string
	addr string
	// pass lets d of Redis time go by: miniredis is fast-forwarded, a real
	// server is waited for.
	pass func(d time.Duration)
}

func startClaimRedis(t *testing.T) *claimRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not on PATH; CI must run the tests against a real Redis (.ci/run installs it)")
		}
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mr.Close)
		t.Logf("redis: miniredis at %s (no redis-server on PATH)", mr.Addr())
		return &claimRedis{kind: "miniredis", addr: mr.Addr(), pass: mr.FastForward}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	r := &claimRedis{kind: "redis-server", addr: "127.0.0.1:" + port, pass: time.Sleep}
	c := OpenRedis(r.addr)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s does not answer PING:\n%s", r.addr, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("redis: %s %s at %s", r.kind, bin, r.addr)
	return r
}

func TestRedisClaimOnce(t *testing.T) {
	srv := startClaimRedis(t)
	ctx := context.Background()
	a, b := OpenRedis(srv.addr), OpenRedis(srv.addr) // two instances
	defer a.Close()
	defer b.Close()
	const ttl = 300 * time.Millisecond // short, for a real server's clock

	claim := func(r *Redis, key string, want bool) {
		t.Helper()
		got, err := r.ClaimOnce(ctx, key, ttl)
		if err != nil || got != want {
			t.Fatalf("ClaimOnce(%s) = %v, %v; want %v", key, got, err, want)
		}
	}
	claim(a, "dedupe:bot:1", true)
	claim(b, "dedupe:bot:1", false) // the other instance sees the claim
	claim(a, "dedupe:bot:1", false) // and so does the claimer
	claim(b, "dedupe:bot:2", true)  // other keys are independent

	if pttl := a.c.PTTL(ctx, "dedupe:bot:1").Val(); pttl <= 0 || pttl > ttl {
		t.Fatalf("claim TTL %v, want in (0, %v]", pttl, ttl)
	}

	srv.pass(ttl + 100*time.Millisecond)
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

	srv := startClaimRedis(t)
	closed := OpenRedis(srv.addr)
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
		ok, err := r.ClaimOnce(ctx, "dedupe:bot:1", time.Minute)
		if err == nil || ok {
			t.Errorf("%s: ClaimOnce = %v, %v; want an error", name, ok, err)
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
	srv := startClaimRedis(t)
	ctx := context.Background()
	a, b := OpenRedis(srv.addr), OpenRedis(srv.addr)
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
	srv.pass(pending + 100*time.Millisecond)
	claim(b, "msg:2", true, false) // the retry after the pending TTL is b's

	closed := OpenRedis(srv.addr)
	closed.Close()
	if _, _, err := closed.ClaimMessage(ctx, "msg:3", pending); err == nil {
		t.Fatal("a closed client claimed a message")
	}
}
