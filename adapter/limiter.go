package adapter

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
)

// callLimiter bounds the calls to the model in flight and follows the
// provider's rate limits: additive increase, multiplicative decrease.
//
// A model answers in seconds, so many users' answers wait on it at once and
// the number in flight is what the provider sees. It starts at max
// (llm.max_concurrency). A call refused as rate-limited (429, 503) halves
// the limit to what was in flight, once per congestion event (only calls
// admitted since the last decrease can lower it again), and holds every new
// call back until the provider's Retry-After has passed: the service backs
// off as a whole, not message by message. Each call that succeeds while the
// limit was in use raises it by one, up to max. Waiting callers are served
// in order.
//
// Hand-written because it must react to the provider's answers
// (Retry-After, 429 versus 401); golang.org/x/sync/semaphore has a fixed
// size and x/time/rate limits a rate, not calls in flight.
type callLimiter struct {
	max   int
	clock clockwork.Clock
	log   *slog.Logger

	mu          sync.Mutex
	limit       int
	inFlight    int
	epoch       uint64 // bumped by every decrease
	pausedUntil time.Time
	waiters     []*callWaiter
	timer       clockwork.Timer // wakes the waiters when a pause ends; nil: none set
	heldBack    bool            // the limit is below max after a rate limit
	logged      time.Time       // the last line logged about being held back
}

// callWaiter is a caller waiting for a permit: ready is closed when it has
// one (epoch set).
type callWaiter struct {
	ready   chan struct{}
	granted bool
	epoch   uint64
}

// callPermit is a call in flight; give it back with release.
type callPermit struct{ epoch uint64 }

// defaultRetryAfter is how long calls are held back after a rate-limited
// answer without Retry-After.
const defaultRetryAfter = time.Second

// heldBackLogEvery spaces the log lines about rate limits: a provider
// limit hovering around the load would otherwise log every second.
const heldBackLogEvery = time.Minute

func newCallLimiter(max int, clock clockwork.Clock, log *slog.Logger) *callLimiter {
	return &callLimiter{max: max, limit: max, clock: clock, log: log}
}

// acquire waits for a permit to call the model, or for ctx to end.
func (l *callLimiter) acquire(ctx context.Context) (callPermit, error) {
	l.mu.Lock()
	if len(l.waiters) == 0 && l.openLocked() {
		l.inFlight++
		p := callPermit{l.epoch}
		l.mu.Unlock()
		return p, nil
	}
	w := &callWaiter{ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.grantLocked()
	l.mu.Unlock()
	select {
	case <-w.ready:
		return callPermit{w.epoch}, nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			l.inFlight-- // granted meanwhile: pass it on
		} else {
			l.waiters = slices.DeleteFunc(l.waiters, func(x *callWaiter) bool { return x == w })
		}
		l.grantLocked()
		l.mu.Unlock()
		return callPermit{}, ctx.Err()
	}
}

// openLocked says whether one more call may start now.
func (l *callLimiter) openLocked() bool {
	return l.inFlight < l.limit && !l.clock.Now().Before(l.pausedUntil)
}

// grantLocked hands permits to the waiters, in order, while calls may
// start; during a pause it sets a timer for its end.
func (l *callLimiter) grantLocked() {
	for len(l.waiters) > 0 && l.openLocked() {
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.inFlight++
		w.granted, w.epoch = true, l.epoch
		close(w.ready)
	}
	if len(l.waiters) > 0 && l.timer == nil {
		if wait := l.pausedUntil.Sub(l.clock.Now()); wait > 0 {
			l.timer = l.clock.AfterFunc(wait, func() {
				l.mu.Lock()
				l.timer = nil
				l.grantLocked()
				l.mu.Unlock()
			})
		}
	}
}

// release ends the call of p, which failed with err (nil: it succeeded),
// and adjusts the limit to what the provider said.
func (l *callLimiter) release(p callPermit, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	used := l.inFlight
	l.inFlight--
	switch {
	case err == nil:
		if l.limit < l.max && 2*used >= l.limit {
			l.limit++
			if l.limit == l.max && l.heldBack {
				l.heldBack = false
				l.log.Info("model calls no longer held back", "max_concurrency", l.max)
			}
		}
	case llm.KindOf(err) == llm.KindRateLimited:
		l.rateLimitedLocked(p, err, used)
	}
	l.grantLocked()
}

// rateLimitedLocked backs off after a call refused for the provider's rate
// limit: every call waits out Retry-After, and the limit is halved unless
// an earlier refusal of the same congestion halved it already.
func (l *callLimiter) rateLimitedLocked(p callPermit, err error, used int) {
	now := l.clock.Now()
	wait := defaultRetryAfter
	if e := (*llm.Error)(nil); errors.As(err, &e) && e.RetryAfter > 0 {
		wait = e.RetryAfter
	}
	if until := now.Add(wait); until.After(l.pausedUntil) {
		l.pausedUntil = until
		if l.timer != nil {
			l.timer.Stop()
			l.timer = nil
		}
	}
	if p.epoch != l.epoch {
		return
	}
	l.epoch++
	l.limit = max(1, min(l.limit, used)/2)
	l.heldBack = true
	if l.logged.IsZero() || now.Sub(l.logged) >= heldBackLogEvery {
		l.logged = now
		l.log.Warn("the model's provider is rate-limiting: holding calls back",
			"calls_at_once", l.limit, "max_concurrency", l.max, "retry_after", wait, "err", err)
	}
}

// stats are the calls in flight and the current limit.
func (l *callLimiter) stats() (inFlight, limit int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight, l.limit
}
