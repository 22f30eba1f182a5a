package adapter

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/redistest"
)

// tokCluster is n instances of the service for one app: each with its own
// database, Redis client, log and refresh loop, all on one Redis and one
// WeCom.
type tokCluster struct {
	e     *tokEnv
	redis *redistest.Server
	tms   []*TokenManager
	logs  []*tokLog
}

func newTokCluster(t testing.TB, n int, opts wecomsim.Options) *tokCluster {
	t.Helper()
	c := &tokCluster{e: newTokEnv(t, opts), redis: redistest.Start(t)}
	for range n {
		shared := storage.OpenRedis(c.redis.Addr)
		t.Cleanup(func() { _ = shared.Close() })
		log := &tokLog{}
		tm := c.e.manager(t, tokManagerOptions{Shared: shared, Log: log})
		c.tms = append(c.tms, tm)
		c.logs = append(c.logs, log)
	}
	return c
}

func (c *tokCluster) run(t testing.TB) {
	for _, tm := range c.tms {
		runTok(t, tm)
	}
}

// sendAll sends perInstance messages through every instance at once.
func (c *tokCluster) sendAll(t testing.TB, perInstance int, label string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, perInstance*len(c.tms))
	for i, tm := range c.tms {
		for j := range perInstance {
			wg.Go(func() {
				if err := c.e.send(context.Background(), tm, "alice", fmt.Sprintf("%s %d/%d", label, i, j)); err != nil {
					errs <- fmt.Errorf("instance %d: %w", i, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// same reports whether every instance serves one token, and returns it.
func (c *tokCluster) same(t testing.TB) (string, bool) {
	t.Helper()
	first := mustGet(t, c.tms[0])
	for _, tm := range c.tms[1:] {
		if mustGet(t, tm) != first {
			return first, false
		}
	}
	return first, true
}

// dump returns the instances' logs, to explain a failure.
func (c *tokCluster) dump() string {
	var b bytes.Buffer
	for i, l := range c.logs {
		fmt.Fprintf(&b, "instance %d:\n%s", i, l)
	}
	return b.String()
}

func TestTokenSharedRedis(t *testing.T) {
	t.Parallel()
	c := newTokCluster(t, 3, wecomsim.Options{})
	e := c.e
	fetches := func() int { return e.sim.TotalTokenFetches() }

	// Cold burst on all three at once, their loops starting too.
	e.sim.SetLatency(20 * time.Millisecond)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, tm := range c.tms {
		for range 100 {
			wg.Go(func() {
				<-start
				if _, err := tm.Get(context.Background()); err != nil {
					t.Errorf("Get: %v", err)
				}
			})
		}
	}
	c.run(t)
	close(start)
	wg.Wait()
	e.sim.SetLatency(0)
	e.settle(t, c.tms...)
	if got := fetches(); got != 1 {
		t.Fatalf("cold burst on 3 instances: %d gettoken calls, want 1\n%s", got, c.dump())
	}
	if _, ok := c.same(t); !ok {
		t.Fatal("the instances serve different tokens")
	}

	// Proactive refresh over a lifetime: one gettoken between them.
	e.idle(t, tokLife, 20*time.Second, nil, c.tms...)
	if got := fetches(); got != 2 {
		t.Fatalf("%d gettoken calls after a lifetime, want 2\n%s", got, c.dump())
	}
	if _, ok := c.same(t); !ok {
		t.Fatal("the instances serve different tokens after the refresh")
	}
	c.sendAll(t, 3, "after a lifetime")
	if r := e.sim.Rejected(); len(r) != 0 {
		t.Fatalf("rejected = %v", r)
	}

	// Forced refresh: WeCom revokes, every instance is refused; one refetch.
	e.sim.RevokeTokens()
	c.sendAll(t, 10, "after a revoke")
	if got := fetches(); got != 3 {
		t.Fatalf("%d gettoken calls after a revoke, want 3: more than one instance refetched\n%s", got, c.dump())
	}
	if _, ok := c.same(t); !ok {
		t.Fatal("the instances serve different tokens after the revoke")
	}

	// Redis stops: every instance keeps serving, falls back to its own
	// token, and says so once.
	c.redis.Stop()
	c.sendAll(t, 2, "redis down")
	e.sim.RevokeTokens()
	c.sendAll(t, 2, "redis down, revoked")
	e.sim.RevokeTokens()
	c.sendAll(t, 2, "redis down, revoked again")
	e.idle(t, tokLife, 20*time.Second, nil, c.tms...)
	c.sendAll(t, 2, "redis down, a lifetime later")
	for i, l := range c.logs {
		if n := l.count("redis unavailable"); n != 1 {
			t.Errorf("instance %d logged the Redis outage %d times, want once:\n%s", i, n, l)
		}
	}

	// Redis is back: the instances share again, one gettoken per lifetime.
	c.redis.Restart()
	before := fetches()
	e.idle(t, tokLife, 20*time.Second, nil, c.tms...)
	if got := fetches() - before; got != 1 {
		t.Errorf("%d gettoken calls in the lifetime after Redis came back, want 1\n%s", got, c.dump())
	}
	if _, ok := c.same(t); !ok {
		t.Error("the instances do not share a token after Redis came back")
	}
	c.sendAll(t, 2, "redis back")
	for i, l := range c.logs {
		if n := l.count("redis available again"); n != 1 {
			t.Errorf("instance %d logged Redis's return %d times, want once:\n%s", i, n, l)
		}
	}
	if r := e.sim.Rejected(); r[codeTokenExpired] != 0 || len(r) > 1 {
		t.Errorf("rejected = %v, want only 40014 after the revokes", r)
	}
}

// A repeat gettoken answer published through Redis must not send the other
// instances into a loop: each waits for the token's real expiry.
func TestTokenSharedRedisSameToken(t *testing.T) {
	t.Parallel()
	c := newTokCluster(t, 3, wecomsim.Options{SameTokenWhileValid: true})
	e := c.e
	c.run(t)
	e.settle(t, c.tms...)
	first := c.tms[0].Status()

	e.idle(t, tokLife-20*time.Second, 20*time.Second, nil, c.tms...)
	if got := e.sim.TotalTokenFetches(); got != 2 {
		t.Fatalf("%d gettoken calls before the expiry, want 2\n%s", got, c.dump())
	}
	for i, tm := range c.tms {
		// Redis keeps times to the millisecond.
		if st := tm.Status(); !st.ExpiresAt.Truncate(time.Millisecond).Equal(first.ExpiresAt.Truncate(time.Millisecond)) {
			t.Errorf("instance %d: expiry moved from %s to %s", i, first.ExpiresAt, st.ExpiresAt)
		}
	}
	e.idle(t, 40*time.Second, 20*time.Second, nil, c.tms...)
	if got := e.sim.TotalTokenFetches(); got != 3 {
		t.Fatalf("%d gettoken calls after the expiry, want 3\n%s", got, c.dump())
	}
	if _, ok := c.same(t); !ok {
		t.Fatal("the instances serve different tokens")
	}
	c.sendAll(t, 2, "after the expiry")
	if r := e.sim.Rejected(); len(r) != 0 {
		t.Errorf("rejected = %v", r)
	}
}
