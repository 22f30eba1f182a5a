package adapter

import (
	"testing"
	"time"
)

// The retry schedules are the ones README documents ("What happens when…"
// and llm.retries): intervals, caps and jitter.
func TestBackOffSchedules(t *testing.T) {
	doubling := func(initial, maxInterval time.Duration) func(n int) time.Duration {
		return func(n int) time.Duration { return min(initial<<n, maxInterval) }
	}
	tests := []struct {
		name   string
		new    func() func(n int) time.Duration // the n-th interval (n from 0) of a fresh schedule
		want   func(n int) time.Duration        // its interval before jitter
		jitter float64
	}{
		{"model call retries: 1 s, 2 s… exactly", func() func(int) time.Duration {
			b := llmRetryBackOff()
			return func(int) time.Duration { return b.NextBackOff() }
		}, doubling(time.Second, time.Duration(1<<62)), 0},
		{"gettoken after a transient failure: 1 s doubling to 5 min, ±50%", func() func(int) time.Duration {
			b := tokenRetryBackOff()
			return func(int) time.Duration { return b.NextBackOff() }
		}, doubling(time.Second, 5*time.Minute), 0.5},
		{"gettoken after a configuration error: 1 min doubling to 30 min exactly", func() func(int) time.Duration {
			b := tokenConfigBackOff()
			return func(int) time.Duration { return b.NextBackOff() }
		}, doubling(time.Minute, 30*time.Minute), 0},
		{"reply part after a failed send: 2 s doubling to 10 min, ±50%", func() func(int) time.Duration {
			return retryDelay
		}, doubling(2*time.Second, 10*time.Minute), 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			below, above := 0, 0
			for range 50 {
				next := tt.new()
				for n := range 14 {
					want, got := tt.want(n), next(n)
					lo := time.Duration(float64(want) * (1 - tt.jitter))
					hi := time.Duration(float64(want)*(1+tt.jitter)) + 1
					if got < lo || got > hi {
						t.Fatalf("interval %d = %s, want %s..%s", n, got, lo, hi)
					}
					switch {
					case got < want:
						below++
					case got > want:
						above++
					}
				}
			}
			if spread := below > 0 && above > 0; spread != (tt.jitter > 0) {
				t.Errorf("%d intervals below the schedule, %d above; jitter %v", below, above, tt.jitter)
			}
		})
	}
}

// A part's delay comes from its stored attempt count, however large.
func TestRetryDelayAfterManyAttempts(t *testing.T) {
	for _, attempts := range []int{20, 1000, 1 << 30} {
		if d := retryDelay(attempts); d < 5*time.Minute || d > 15*time.Minute+1 {
			t.Errorf("retryDelay(%d) = %s, want 10 min ±50%%", attempts, d)
		}
	}
}
