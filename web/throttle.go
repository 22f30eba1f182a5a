package web

import (
	"math"
	"sync"
	"time"
)

// Login throttling: a few wrong passwords from an IP are free (typos); after
// that each attempt must wait twice as long as the one before, up to
// throttleMaxDelay. An IP's count is forgotten after throttleForget without
// a failure, or on a success.
const (
	throttleFree     = 5
	throttleMaxDelay = 5 * time.Minute
	throttleForget   = 15 * time.Minute
	// throttleSweepAt bounds the table: past it, forgotten IPs are dropped.
	// The next sweep waits until the table has doubled again, so a table of
	// recent failures is not walked on every wrong password.
	throttleSweepAt = 1024
)

type failures struct {
	n    int
	last time.Time
}

// throttle counts failed logins per IP (the peer's address: a proxy's
// X-Forwarded-For would let an attacker pick a new IP per guess).
type throttle struct {
	now func() time.Time

	mu      sync.Mutex
	byIP    map[string]failures
	sweepAt int // byIP's size that triggers the next sweep; see throttleSweepAt
}

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, byIP: map[string]failures{}}
}

// wait returns how long ip must wait before its next attempt; 0: now.
func (t *throttle) wait(ip string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.byIP[ip]
	if !ok || f.n < throttleFree {
		return 0
	}
	now := t.now()
	if now.Sub(f.last) >= throttleForget {
		delete(t.byIP, ip)
		return 0
	}
	exp := min(f.n-throttleFree, 30)
	delay := time.Duration(math.Min(float64(time.Second)*math.Pow(2, float64(exp)), float64(throttleMaxDelay)))
	return max(f.last.Add(delay).Sub(now), 0)
}

// fail records a wrong password from ip.
func (t *throttle) fail(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.byIP) >= max(t.sweepAt, throttleSweepAt) {
		for k, f := range t.byIP {
			if now.Sub(f.last) >= throttleForget {
				delete(t.byIP, k)
			}
		}
		t.sweepAt = 2 * len(t.byIP)
	}
	f := t.byIP[ip]
	if now.Sub(f.last) >= throttleForget {
		f.n = 0
	}
	t.byIP[ip] = failures{n: f.n + 1, last: now}
}

// succeed forgets the failures of ip.
func (t *throttle) succeed(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byIP, ip)
}

// retryAfter is a wait in whole seconds for a Retry-After header.
func retryAfter(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
