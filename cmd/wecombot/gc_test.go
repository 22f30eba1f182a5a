package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	prevPct, prevLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer func() { debug.SetGCPercent(prevPct); debug.SetMemoryLimit(prevLimit) }()

	tuneGC(func(string) string { return "" })
	if pct := debug.SetGCPercent(100); pct != serveGCPercent {
		t.Errorf("GC percent %d, want %d", pct, serveGCPercent)
	}
	if limit := debug.SetMemoryLimit(-1); limit != serveMemoryLimit {
		t.Errorf("memory limit %d, want %d", limit, serveMemoryLimit)
	}

	// The operator's GOGC and GOMEMLIMIT are left alone.
	debug.SetMemoryLimit(1 << 40)
	tuneGC(func(k string) string { return map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}[k] })
	if pct := debug.SetGCPercent(100); pct != 100 {
		t.Errorf("GC percent %d with GOGC set, want it untouched (100)", pct)
	}
	if limit := debug.SetMemoryLimit(-1); limit != 1<<40 {
		t.Errorf("memory limit %d with GOMEMLIMIT set, want it untouched", limit)
	}
}
