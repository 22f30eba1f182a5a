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
	last       storage.IngestStats
	lastAdjust time.Time
	slack      int // ticks in a row the limit did not bind
	clock      clockwork.Clock
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
	limit := p.lim.Limit()
	switch {
	case wait > max(paceWait, write):
		base := started
		if limit != rate.Inf {
			base = min(base, float64(limit))
		}
		next := max(paceMin, 0.7*base)
		if limit == rate.Inf {
			p.log.Info("pacing answers: callbacks wait for them", "answers_per_second", int(next), "callback_wait", wait)
		}
		p.lim.SetLimit(rate.Limit(next))
	case limit == rate.Inf:
	case started < float64(limit)/2: // fewer answers want to start than may
		if p.slack++; p.slack >= paceRelease {
			p.lim.SetLimit(rate.Inf)
			p.log.Info("answers no longer paced")
		}
		return
	default:
		p.lim.SetLimit(limit*1.2 + 1)
	}
	p.slack = 0
}

// limit is the current pace in answers a second (rate.Inf: none).
func (p *answerPacer) limit() rate.Limit { return p.lim.Limit() }
