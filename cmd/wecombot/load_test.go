package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadSmoke runs the load tool for a moment. Timings are not asserted:
// they depend on the machine. Only that nothing is lost or duplicated, and
// that the report has every figure.
func TestLoadSmoke(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	o := loadOptions{
		Users: 20, Rate: 100, Duration: 2 * time.Second, Senders: 8,
		Drain: 30 * time.Second, CPUProfile: prof, Log: io.Discard,
	}
	r, err := runLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.print(&out)
	t.Log("\n" + out.String())
	if r.Service.Accepted == 0 || r.Baseline.Accepted == 0 {
		t.Fatalf("accepted: service %d, baseline %d; want both > 0", r.Service.Accepted, r.Baseline.Accepted)
	}
	if r.Service.Failed != 0 {
		t.Errorf("%d callbacks failed", r.Service.Failed)
	}
	if r.Lost != 0 || r.Duplicates != 0 {
		t.Errorf("lost %d, duplicates %d; want none", r.Lost, r.Duplicates)
	}
	if r.Answered != r.Service.Accepted {
		t.Errorf("answered %d of %d accepted", r.Answered, r.Service.Accepted)
	}
	for _, field := range []string{
		"callbacks/s accepted", "ack p50", "ack p95", "ack p99", "ack max", "baseline", "ratio",
		"answers delivered/s", "end-to-end p50", "end-to-end p99", "duplicates", "losses",
		"peak RSS before load", "peak RSS after service", "CPU profile",
	} {
		if !strings.Contains(out.String(), field) {
			t.Errorf("report has no %q", field)
		}
	}
}

func TestLoadCommandFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"load", "-users", "0"}, io.Discard, &stderr); code != 2 {
		t.Errorf("-users 0: exit %d, want 2; stderr %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"load", "-service", "http://127.0.0.1:1"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("-service: exit %d, want 2", code)
	}
}
