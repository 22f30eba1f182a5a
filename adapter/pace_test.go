package adapter

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/wecombot/wecombot/storage"
)

// paceEnv drives an answerPacer tick by tick: each tick says how many
// ingest batches there were, how long each waited and then wrote (writeEach:
// 50 µs unless set), and how many answers started.
type paceEnv struct {
	t         *testing.T
	clock     *clockwork.FakeClock
	p         *answerPacer
	stats     storage.IngestStats
	writeEach time.Duration
}

func newPaceEnv(t *testing.T) *paceEnv {
	e := &paceEnv{t: t, clock: clockwork.NewFakeClock(), writeEach: 50 * time.Microsecond}
	e.p = newAnswerPacer(func() storage.IngestStats { return e.stats }, e.clock, slog.New(slog.DiscardHandler))
	return e
}

func (e *paceEnv) tick(batches int64, waitEach time.Duration, started int64) rate.Limit {
	e.stats.Batches += batches
	e.stats.Waited += time.Duration(batches) * waitEach
	e.stats.Wrote += time.Duration(batches) * e.writeEach
	e.p.started.Add(started)
	e.clock.Advance(paceTick)
	e.p.adjust()
	l := e.p.limit()
	if l != rate.Inf {
		l = rate.Limit(math.Round(float64(l)*1000) / 1000) // 0.7×350 is 244.99999999999997
	}
	return l
}

func TestPacerPacesWhileCallbacksWait(t *testing.T) {
	e := newPaceEnv(t)
	// 100 ms ticks: 50 answers started in one is 500 a second.
	if got := e.tick(100, 10*time.Microsecond, 50); got != rate.Inf {
		t.Fatalf("callbacks waited 10µs each: pace %v, want none", got)
	}
	if got := e.tick(100, time.Millisecond, 50); got != 350 {
		t.Fatalf("callbacks waited 1ms each at 500 answers/s: pace %v, want 350 (70%%)", got)
	}
	// The rate is smoothed over ticks (0.7 old, 0.3 new): 455/s now, but
	// the cut starts from the pace when that is lower.
	if got := e.tick(100, time.Millisecond, 35); got != 245 {
		t.Fatalf("still waiting at 350/s: pace %v, want 245", got)
	}
	if got := e.tick(100, time.Millisecond, 0); got != 171.5 {
		t.Fatalf("waiting, no answer started this tick: pace %v, want 171.5", got)
	}
	for i := 0; ; i++ {
		got := e.tick(100, time.Millisecond, 0)
		if got < paceMin {
			t.Fatalf("pace %v under the floor %d", got, paceMin)
		}
		if got == paceMin {
			break
		}
		if i == 20 {
			t.Fatalf("still %v after 20 ticks of waiting with no answer started, want the floor %d", got, paceMin)
		}
	}
	if got := e.tick(100, 0, 1); got != paceMin*1.2+1 {
		t.Fatalf("no wait, the pace used: pace %v, want it raised to %v", got, paceMin*1.2+1)
	}
	for i := range paceRelease {
		got := e.tick(0, 0, 0)
		if i < paceRelease-1 && got == rate.Inf {
			t.Fatalf("the pace dropped after %d quiet ticks, want %d", i+1, paceRelease)
		}
		if i == paceRelease-1 && got != rate.Inf {
			t.Fatalf("no wait and no answer wanting to start for %d ticks: pace %v, want none", paceRelease, got)
		}
	}
}

// TestPacerQuietTick: one tick without answers (the workers all waited for
// the model) does not make the first cut start from nothing.
func TestPacerQuietTick(t *testing.T) {
	e := newPaceEnv(t)
	for range 3 {
		e.tick(100, 0, 50) // 500 answers/s, nobody waits
	}
	if got := e.tick(100, time.Millisecond, 0); got != 245 {
		t.Fatalf("callbacks wait in a tick without answers, after 500/s: pace %v, want 245 (70%% of 350, the smoothed rate)", got)
	}
}

// TestPacerSlowDisk: on a disk where every commit takes 5 ms, the ingest
// waiting 1 ms a batch for the answer path's commits is no reason to pace.
func TestPacerSlowDisk(t *testing.T) {
	e := newPaceEnv(t)
	e.writeEach = 5 * time.Millisecond
	if got := e.tick(100, time.Millisecond, 50); got != rate.Inf {
		t.Fatalf("callbacks waited 1ms each, writes took 5ms: pace %v, want none", got)
	}
	if got := e.tick(100, 20*time.Millisecond, 50); got != 350 {
		t.Fatalf("callbacks waited 20ms each, writes took 5ms: pace %v, want 350", got)
	}
}

func TestPacerWait(t *testing.T) {
	e := newPaceEnv(t)
	ctx := context.Background()
	for range 3 {
		if err := e.p.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.p.started.Load(); n != 3 {
		t.Fatalf("%d answers counted as started, want 3", n)
	}
	e.p.lim.SetLimit(0.01) // a start every 100 s
	for range paceBurst {  // the burst is not held back
		if err := e.p.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The next start is 100 s away: a context ending sooner fails it at
	// once, and it does not count.
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.p.wait(short); err == nil {
		t.Fatal("wait returned before the pace allowed")
	}
	if n := e.p.started.Load(); n != 3+paceBurst {
		t.Fatalf("%d answers counted as started, want %d", n, 3+paceBurst)
	}
}

// TestPipelinePacedAnswersAll: a pipeline on SQLite has a pacer, and held
// to its floor it still answers every message.
func TestPipelinePacedAnswersAll(t *testing.T) {
	e := newPipelineEnv(t, PipelineConfig{Workers: 4, Replies: testReplies}, nil)
	if e.p.pacer == nil {
		t.Fatal("no pacer on SQLite")
	}
	e.p.pacer.lim.SetLimit(paceMin)
	if err := e.p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 2 * paceBurst {
		ids = append(ids, e.text(string(rune('a'+i)), "hi"))
	}
	for _, id := range ids {
		if m := e.done(id); m.State == storage.MessageFailed {
			t.Fatalf("message %d ended %s", id, m.State)
		}
	}
	if n := e.p.pacer.started.Load(); n != int64(len(ids)) {
		t.Fatalf("%d answers started through the pacer, want %d", n, len(ids))
	}
}

// TestPaceMetric: the gauge shows the pace while answers are paced, 0
// otherwise.
func TestPaceMetric(t *testing.T) {
	e := newPaceEnv(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.watchPacer(e.p)
	want := func(v float64) {
		t.Helper()
		if got, ok := tokMetric(t, reg, "wecombot_answers_paced_per_second", nil); !ok || got != v {
			t.Fatalf("wecombot_answers_paced_per_second = %v (%v), want %v", got, ok, v)
		}
	}
	want(0)
	e.tick(100, 0, 50)
	e.tick(100, time.Millisecond, 50)
	want(350)
}
