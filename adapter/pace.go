package adapter

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/wecombot/wecombot/storage"
)

// answerPacer holds answers back while callbacks wait for them. WeCom waits
// for the acknowledgement of every callback, and on SQLite the ingest of
// callbacks and the answer path take turns on one connection (the ingest
// first, but never in the middle of a statement). When an LLM answers at
// once, the answer path is busy enough that the ingest waits for it and
// shares the CPU with it (BENCHMARKS.md, session 4). So when the ingest's
// batches waited longer than paceWait each, on average over a tick, and
// longer than they then took to write (a slow disk makes every write, the
// answer path's too, long: waits of that order are no reason), the
// rate at which answers start is cut to 70 % of what it was; while they do
// not, it grows back by a fifth a tick, and once it has not bound for a
// second (paceRelease ticks) answers are not paced at all. An LLM that takes seconds leaves the database idle
// between answers: nothing is paced then. Answers are never held below
// paceMin a second.
type answerPacer struct {
	lim   *rate.Limiter
	stats func() storage.IngestStats // storage.DB.IngestStats
	log   *slog.Logger

	started    atomic.Int64 // answers started since the last adjust
	rate       float64      // answers started a second, smoothed over ticks
	warm       bool         // rate has its first tick
	last       storage.IngestStats
	lastAdjust time.Time
	slack      int // ticks in a row the limit did not bind
	clock      clockwork.Clock
	pacedSince time.Time // zero: not paced
	logged     time.Time // the last line logged about pacing
}

const (
	paceTick  = 100 * time.Millisecond
	paceWait  = 100 * time.Microsecond // mean wait of an ingest batch above which answers are paced
	paceMin   = 10                     // answers a second, however busy the ingest
	paceBurst = 4
	// paceRelease is how many ticks in a row fewer answers must want to
	// start than the limit allows before it is dropped: a burst of
	// callbacks comes and goes, the pacing should not flap with it.
	paceRelease = 10
	// paceLogEvery spaces the log lines about pacing: load that hovers
	// about the threshold would otherwise log every second.
	paceLogEvery = time.Minute
)

// newAnswerPacer returns a pacer on stats, the ingest's totals so far; it
// paces nothing until adjust finds a reason.
func newAnswerPacer(stats func() storage.IngestStats, clock clockwork.Clock, log *slog.Logger) *answerPacer {
	p := &answerPacer{lim: rate.NewLimiter(rate.Inf, paceBurst), stats: stats, clock: clock, log: log}
	p.last = stats()
	p.lastAdjust = clock.Now()
	return p
}

// wait blocks until an answer may start, or ctx ends.
func (p *answerPacer) wait(ctx context.Context) error {
	if err := p.lim.Wait(ctx); err != nil {
		return err
	}
	p.started.Add(1)
	return nil
}

// adjust sets the pace from what happened since it last ran; the pipeline
// calls it every paceTick.
func (p *answerPacer) adjust() {
	now := p.clock.Now()
	elapsed := now.Sub(p.lastAdjust)
	if elapsed <= 0 {
		return
	}
	p.lastAdjust = now
	s := p.stats()
	n := s.Batches - p.last.Batches
	var wait, write time.Duration // per batch
	if n > 0 {
		wait, write = (s.Waited-p.last.Waited)/time.Duration(n), (s.Wrote-p.last.Wrote)/time.Duration(n)
	}
	p.last = s
	started := float64(p.started.Swap(0)) / elapsed.Seconds()
	// The cut starts from the rate of the last few ticks: one tick in
	// which the workers all waited for the model is no measure of it.
	if p.warm {
		p.rate = 0.7*p.rate + 0.3*started
	} else {
		p.rate, p.warm = started, true
	}
	limit := p.lim.Limit()
	switch {
	case wait > max(paceWait, write):
		base := p.rate
		if limit != rate.Inf {
			base = min(base, float64(limit))
		}
		next := max(paceMin, 0.7*base)
		if limit == rate.Inf {
			p.pacedSince = now
			p.note(now, "pacing answers: callbacks wait for them", "answers_per_second", int(next), "callback_wait", wait)
		}
		p.lim.SetLimit(rate.Limit(next))
	case limit == rate.Inf:
	case started < float64(limit)/2: // fewer answers want to start than may
		if p.slack++; p.slack >= paceRelease {
			p.lim.SetLimit(rate.Inf)
			p.note(now, "answers no longer paced", "paced_for", now.Sub(p.pacedSince).Round(100*time.Millisecond))
			p.pacedSince = time.Time{}
		}
		return
	default:
		p.lim.SetLimit(limit*1.2 + 1)
	}
	p.slack = 0
}

// note logs msg unless a line about pacing was logged less than
// paceLogEvery ago.
func (p *answerPacer) note(now time.Time, msg string, args ...any) {
	if !p.logged.IsZero() && now.Sub(p.logged) < paceLogEvery {
		return
	}
	p.logged = now
	p.log.Info(msg, args...)
}

// limit is the current pace in answers a second (rate.Inf: none).
func (p *answerPacer) limit() rate.Limit { return p.lim.Limit() }
