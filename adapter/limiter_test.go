package adapter

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
)

// In these tests time is synctest's: the real clock inside the bubble
// moves only when every goroutine waits.

func newTestLimiter(max int) *callLimiter {
	return newCallLimiter(max, clockwork.NewRealClock(), slog.New(slog.DiscardHandler))
}

var rateLimited = &llm.Error{Kind: llm.KindRateLimited, Status: 429, RetryAfter: 2 * time.Second}

func TestCallLimiterCapsAndServesInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newTestLimiter(2)
		a, _ := l.acquire(t.Context())
		b, _ := l.acquire(t.Context())
		order := make(chan int, 3)
		for i := range 3 {
			go func() {
				p, err := l.acquire(t.Context())
				if err != nil {
					t.Error(err)
				}
				order <- i
				l.release(p, nil)
			}()
			synctest.Wait() // queued in this order
		}
		if n, _ := l.stats(); n != 2 {
			t.Fatalf("in flight %d, want 2", n)
		}
		// One slot free: the waiters pass it on, one at a time.
		l.release(a, nil)
		for want := range 3 {
			if got := <-order; got != want {
				t.Fatalf("waiter %d served before %d", got, want)
			}
		}
		l.release(b, nil)
	})
}

func TestCallLimiterBacksOffAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newTestLimiter(100)
		permits := make([]callPermit, 20)
		for i := range permits {
			permits[i], _ = l.acquire(t.Context())
		}
		// Three calls of the same congestion are refused: one decrease,
		// to half of what was in flight.
		start := time.Now()
		for _, p := range permits[:3] {
			l.release(p, rateLimited)
		}
		if _, limit := l.stats(); limit != 10 {
			t.Fatalf("limit %d after a congestion with 20 in flight, want 10", limit)
		}
		// Nobody starts during Retry-After, even with room.
		for _, p := range permits[3:15] {
			l.release(p, nil)
		}
		p, err := l.acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 2*time.Second {
			t.Fatalf("a call started %v after the refusal, want after Retry-After (2s)", waited)
		}
		l.release(p, nil)
		for _, p := range permits[15:] {
			l.release(p, nil)
		}
		// Each success while the limit is in use raises it by one.
		for range 200 {
			batch := make([]callPermit, 0, 100)
			for {
				n, limit := l.stats()
				if n >= limit {
					break
				}
				p, _ := l.acquire(t.Context())
				batch = append(batch, p)
			}
			for _, p := range batch {
				l.release(p, nil)
			}
		}
		if _, limit := l.stats(); limit != 100 {
			t.Fatalf("limit %d after many successes, want back at max 100", limit)
		}
	})
}

func TestCallLimiterOtherFailuresKeepTheLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newTestLimiter(4)
		for _, err := range []error{errors.New("boom"), &llm.Error{Kind: llm.KindConfig, Status: 401}, &llm.Error{Kind: llm.KindTimeout}} {
			p, _ := l.acquire(t.Context())
			l.release(p, err)
		}
		start := time.Now()
		p, _ := l.acquire(t.Context())
		l.release(p, nil)
		if _, limit := l.stats(); limit != 4 || time.Since(start) != 0 {
			t.Fatalf("limit %d, waited %v: only rate limits hold calls back", limit, time.Since(start))
		}
	})
}

func TestCallLimiterCancelledWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newTestLimiter(1)
		held, _ := l.acquire(t.Context())
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { _, err := l.acquire(ctx); done <- err }()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter got %v", err)
		}
		l.release(held, nil)
		if n, _ := l.stats(); n != 0 {
			t.Fatalf("in flight %d after all released, want 0", n)
		}
		if _, err := l.acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}
