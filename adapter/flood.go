package adapter

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// A flood is messages arriving faster than floodArrivals a second. While one
// lasts, answers start at most floodAnswers a second, so that the
// acknowledgements keep the CPU. Unpaced, a flood's backlog was answered as
// fast as the model allowed (about 900 answers saved a second with a 0 s
// model, while the outbox delivered 130–360), and on the 2-core machine the
// ingest kept 0.23–0.48× the baseline's callbacks a second, ack p99 51–237
// ms (median 78), 48–125 ms over the backlog; paced, in the same stretches,
// 0.27–0.56×, 30–144 ms (median 50), 14–109 ms, with 126–234 answers a
// second delivered in 5 of 6 runs (on a quiet stretch, with the stream read
// cheaper too: 0.43–0.60×, 27–48 ms, 8–43 ms, 215–228 answers a second, 7
// runs). Targets: under a flood, ack p99 < 50 ms
// and ingress ≥ 0.5× the baseline, with at least 100 answers a second
// (BENCHMARKS.md, the flood row). Below floodArrivals nothing is held back:
// the model's speed and the database's are the only limits.
const (
	floodArrivals = 500
	floodAnswers  = 200
)

// floodGuard counts arrivals in one-second windows and paces the starts of
// answers while they come faster than floodArrivals a second.
type floodGuard struct {
	clock clockwork.Clock
	log   *slog.Logger

	mu       sync.Mutex
	window   time.Time // start of the current one-second window
	cur      int       // arrivals in it
	prev     int       // arrivals in the window before
	flooding bool      // as last logged
	starts   *rate.Limiter
	ended    chan struct{} // made when a flood begins, closed when it ends: its waits end too
}

func newFloodGuard(clock clockwork.Clock, log *slog.Logger) *floodGuard {
	return &floodGuard{clock: clock, log: log, starts: rate.NewLimiter(floodAnswers, 1)}
}

// arrived counts a new message.
func (f *floodGuard) arrived() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(f.clock.Now())
	f.cur++
}

// roll moves the windows to now. f.mu is held.
func (f *floodGuard) roll(now time.Time) {
	switch gone := now.Sub(f.window); {
	case gone < time.Second:
	case gone < 2*time.Second:
		f.prev, f.cur = f.cur, 0
		f.window = f.window.Add(time.Second)
	default:
		f.prev, f.cur = 0, 0
		f.window = now
	}
}

// flooded reports whether messages arrive faster than floodArrivals a
// second: those of the last second, the part of the window before that
// still falls in it counted pro rata. It logs when a flood begins and ends.
// f.mu is held.
func (f *floodGuard) flooded(now time.Time) bool {
	f.roll(now)
	into := float64(now.Sub(f.window)) / float64(time.Second)
	rate := float64(f.cur) + float64(f.prev)*(1-into)
	flooding := rate > floodArrivals
	if flooding != f.flooding {
		f.flooding = flooding
		if flooding {
			f.ended = make(chan struct{})
			f.log.Warn("a flood of messages: answers are paced until it ends, the acknowledgements first",
				"arrivals_per_second", int(rate), "answers_per_second", floodAnswers)
		} else {
			close(f.ended)
			f.log.Info("the flood of messages ended: answers are no longer paced")
		}
	}
	return flooding
}

// active reports whether a flood lasts now.
func (f *floodGuard) active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flooded(f.clock.Now())
}

// delay reserves a start at now and returns how long it waits for it (0
// unless a flood lasts) and a channel closed if the flood ends sooner.
func (f *floodGuard) delay(now time.Time) (time.Duration, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.flooded(now) {
		return 0, nil
	}
	return f.starts.ReserveN(now, 1).DelayFrom(now), f.ended
}

// wait returns when an answer may start: at once unless a flood lasts;
// else when its turn comes, the flood ends, or ctx ends. The caller holds
// a storage slot of slot (see storageSlots), given up while it waits.
func (f *floodGuard) wait(ctx context.Context, slot chan struct{}) {
	d, ended := f.delay(f.clock.Now())
	if d <= 0 {
		return
	}
	<-slot
	defer func() { slot <- struct{}{} }()
	t := f.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
	case <-ended:
	case <-ctx.Done():
	}
}
