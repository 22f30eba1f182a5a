package adapter

import (
	"math"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// The adapter's retry schedules, side by side. Each is a
// backoff.ExponentialBackOff used only as a sequence of intervals: the
// waits themselves are on the injected clock (backoff.Retry waits on a real
// timer it does not let callers replace), and what is retried, and how
// often, stays with each caller. Each sets its RandomizationFactor: jitter
// where many callers fail at once and should not come back together, none
// where the documented pauses are exact.

// llmRetryBackOff is the pause before each retry of a failed call to the
// model (Pipeline.ask): 1 s, 2 s, 4 s… as README documents them. No jitter:
// what holds back the calls of many users at once is the call limiter
// (callLimiter), not their pauses. No cap of its own: llm.retries (at most
// 5) bounds it.
func llmRetryBackOff() *backoff.ExponentialBackOff {
	return newBackOff(time.Second, math.MaxInt64, 0)
}

// tokenRetryBackOff spaces gettoken after a transient failure (network,
// -1, 45009, 45033): 1 s doubling to 5 min, ±50% so that the instances and
// bots that saw the same outage spread out.
func tokenRetryBackOff() *backoff.ExponentialBackOff {
	return newBackOff(time.Second, 5*time.Minute, 0.5)
}

// tokenConfigBackOff spaces gettoken after a configuration error: an admin
// has to act, and bad calls count toward WeCom's hourly block. 1 min
// doubling to 30 min, as README documents them; no jitter: one call per bot,
// and the next try is shown to the admin.
func tokenConfigBackOff() *backoff.ExponentialBackOff {
	return newBackOff(time.Minute, 30*time.Minute, 0)
}

// sendRetryBackOff spaces the attempts to deliver a reply part: 2 s
// doubling to 10 min, ±50% so that the parts of many users, failed by one
// outage, spread out when WeCom is back.
func sendRetryBackOff() *backoff.ExponentialBackOff {
	return newBackOff(2*time.Second, 10*time.Minute, 0.5)
}

func newBackOff(initial, maxInterval time.Duration, jitter float64) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval: initial, RandomizationFactor: jitter, Multiplier: 2, MaxInterval: maxInterval,
	}
	b.Reset()
	return b
}

// nthBackOff is the interval b gives after n others (n from 0), for a
// schedule whose position is stored rather than kept in memory (the
// outbox's attempt count lives in the part's row). 64 doublings pass any
// cap, so larger n give the same interval as 64.
func nthBackOff(b *backoff.ExponentialBackOff, n int) time.Duration {
	b.Reset()
	d := b.NextBackOff()
	for range min(n, 64) {
		d = b.NextBackOff()
	}
	return d
}
