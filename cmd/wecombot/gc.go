package main

import "runtime/debug"

// The service's live heap is small (a few MB) and its garbage is made fast
// (a few hundred bytes per callback), so with Go's default GOGC=100 it
// collected several times a second under load, on the same 2 cores as the
// callbacks: p99 ack 17–22 ms at 1,000 callbacks/s, 13–15 ms with GOGC=400
// (BENCHMARKS.md). The memory limit keeps the bigger heap target from
// growing past the 200 MB with 1,000 users in flight (164 MB RSS
// with 128 MiB, 192 MB with 160 MiB): near it the collector runs as often as
// needed. GOGC and GOMEMLIMIT in the environment win over both.
const (
	serveGCPercent   = 400
	serveMemoryLimit = 128 << 20
)

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serveMemoryLimit)
	}
}
