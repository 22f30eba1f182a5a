package adapter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func newTestFloodGuard(t *testing.T) (*floodGuard, *clockwork.FakeClock, *bytes.Buffer) {
	t.Helper()
	// A window's start on a whole second, so that offsets read plainly.
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	f := newFloodGuard(clock, slog.New(slog.NewTextHandler(&logs, nil)))
	return f, clock, &logs
}

// delays reserves n starts now and returns the wait of each.
func delays(f *floodGuard, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i], _ = f.delay(f.clock.Now())
	}
	return out
}

func TestFloodGuardBelowTheThresholdHoldsNothing(t *testing.T) {
	f, _, logs := newTestFloodGuard(t)
	for range floodArrivals {
		f.arrived()
	}
	for i, d := range delays(f, 5*floodAnswers) {
		if d != 0 {
			t.Fatalf("start %d waits %v with %d arrivals a second", i, d, floodArrivals)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("logged %q without a flood", logs.String())
	}
}

func TestFloodGuardPacesStartsDuringAFlood(t *testing.T) {
	f, clock, logs := newTestFloodGuard(t)
	for range floodArrivals + 1 {
		f.arrived()
	}
	ds := delays(f, floodAnswers+1)
	if ds[0] != 0 {
		t.Errorf("the first start waits %v", ds[0])
	}
	// Starts are spread evenly: the last of a second's floodAnswers is a
	// second after the first.
	if got, want := ds[floodAnswers], time.Second; got != want {
		t.Errorf("start %d waits %v, want %v", floodAnswers, got, want)
	}
	for i := 1; i < len(ds); i++ {
		if ds[i] <= ds[i-1] {
			t.Fatalf("start %d waits %v, not after start %d (%v)", i, ds[i], i-1, ds[i-1])
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "arrivals_per_second=501") {
		t.Errorf("the flood's start was not logged with its rate: %q", logs.String())
	}

	// No more arrivals: half a second into the next window, the last
	// window's 501 count for half (250): the flood is over.
	clock.Advance(1500 * time.Millisecond)
	if d, _ := f.delay(clock.Now()); d != 0 {
		t.Errorf("after the flood a start waits %v", d)
	}
	if !strings.Contains(logs.String(), "flood of messages ended") {
		t.Errorf("the flood's end was not logged: %q", logs.String())
	}
}

func TestFloodGuardCountsTheWindowBeforeProRata(t *testing.T) {
	f, clock, _ := newTestFloodGuard(t)
	for range 600 {
		f.arrived()
	}
	// 0.1 s into the next window: 600 × 0.9 = 540 in the last second.
	clock.Advance(1100 * time.Millisecond)
	if ds := delays(f, 2); ds[1] == 0 {
		t.Errorf("540 arrivals in the last second: the second start did not wait")
	}
	// 0.5 s into it: 300.
	clock.Advance(400 * time.Millisecond)
	if d, _ := f.delay(clock.Now()); d != 0 {
		t.Errorf("300 arrivals in the last second: a start waits %v", d)
	}
	// Two windows later nothing counts.
	for range 600 {
		f.arrived()
	}
	clock.Advance(2 * time.Second)
	if d, _ := f.delay(clock.Now()); d != 0 {
		t.Errorf("no arrivals for a second: a start waits %v", d)
	}
}

// TestFloodGuardWait: a wait during a flood gives up the storage slot
// and ends with its turn, with the flood, or with its context.
func TestFloodGuardWait(t *testing.T) {
	f, clock, _ := newTestFloodGuard(t)
	for range floodArrivals + 1 {
		f.arrived()
	}
	slot := make(chan struct{}, 1)
	slot <- struct{}{}        // held, as by a served user
	f.wait(t.Context(), slot) // the first start: no wait
	waiting := func(ctx context.Context) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			f.wait(ctx, slot)
			close(done)
		}()
		if err := clock.BlockUntilContext(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			t.Fatal("a start during a flood did not wait for its turn")
		default:
		}
		if len(slot) != 0 {
			t.Fatal("the storage slot is held during the wait")
		}
		return done
	}

	done := waiting(t.Context())
	clock.Advance(time.Second / floodAnswers)
	<-done
	if len(slot) != 1 {
		t.Fatal("the storage slot was not taken back after the wait")
	}

	ctx, cancel := context.WithCancel(t.Context())
	done = waiting(ctx)
	cancel()
	<-done

	// The flood ends (1.5 s later nothing arrived) while a start waits 2 s
	// ahead: the next delay sees the end and releases it.
	for range 2 * floodAnswers {
		f.delay(clock.Now())
	}
	done = waiting(t.Context())
	clock.Advance(1500 * time.Millisecond)
	if d, _ := f.delay(clock.Now()); d != 0 {
		t.Fatalf("after the flood a start waits %v", d)
	}
	<-done
}
