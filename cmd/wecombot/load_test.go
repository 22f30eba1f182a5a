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

// checkLoadReport checks what every run must show: nothing lost or
// duplicated, and every figure in the report. Timings are not asserted:
// they depend on the machine.
func checkLoadReport(t *testing.T, r *loadReport, fields ...string) string {
	t.Helper()
	var out bytes.Buffer
	r.print(&out)
	t.Log("\n" + out.String())
	if r.Service.Accepted == 0 {
		t.Fatalf("service accepted nothing")
	}
	if r.Service.Failed != 0 {
		t.Errorf("%d callbacks failed", r.Service.Failed)
	}
	if r.Lost != 0 || r.Duplicates != 0 {
		t.Errorf("lost %d, duplicates %d; want none", r.Lost, r.Duplicates)
	}
	if r.TokenFetches != 1 {
		t.Errorf("%d gettoken calls under load, want 1 (one token lifetime)", r.TokenFetches)
	}
	if r.Answered != r.Service.Accepted {
		t.Errorf("answered %d of %d accepted", r.Answered, r.Service.Accepted)
	}
	for _, field := range append([]string{
		"callbacks/s accepted", "ack p50", "ack p95", "ack p99", "ack max", "baseline", "ratio",
		"answers delivered/s", "end-to-end p50", "end-to-end p99", "duplicates", "losses", "gettoken calls",
		"peak RSS before load", "peak RSS after service", "RSS at the end",
	}, fields...) {
		if !strings.Contains(out.String(), field) {
			t.Errorf("report has no %q", field)
		}
	}
	if r.IdleRSS <= 0 || r.HWMAfter < r.HWMBefore || r.EndRSS <= 0 {
		t.Errorf("memory: idle %d, peak before %d, after %d, end %d kB", r.IdleRSS, r.HWMBefore, r.HWMAfter, r.EndRSS)
	}
	return out.String()
}

// TestLoadSmoke runs the load tool for a moment with the service in this
// process (as -cpuprofile does).
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
	if r.Baseline.Accepted == 0 {
		t.Errorf("the baseline accepted nothing")
	}
	if r.ServicePID != 0 {
		t.Errorf("with a CPU profile the service runs in-process, got pid %d", r.ServicePID)
	}
	checkLoadReport(t, r, "CPU profile", "whole load process")
}

// TestLoadChild runs the real binary as the service: in a short soak (the
// memory figures are the child's, and sampled), and in a short run beside
// the baseline, which then runs as its own process too.
func TestLoadChild(t *testing.T) {
	bin := buildBinary(t)
	t.Run("soak", func(t *testing.T) {
		o := loadOptions{
			Users: 20, Rate: 50, Soak: 3 * time.Second, SampleEvery: 500 * time.Millisecond, Senders: 8,
			Drain: 30 * time.Second, Settle: 100 * time.Millisecond, Binary: bin, Log: io.Discard,
		}
		r, err := runLoad(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.ServicePID == 0 {
			t.Fatal("the service ran in-process")
		}
		if len(r.Soak) < 3 {
			t.Errorf("%d RSS samples in a 3 s soak every 500 ms", len(r.Soak))
		}
		if r.Baseline.Sent != 0 || r.BaselinePID != 0 {
			t.Errorf("a soak drove the baseline too (%d callbacks, pid %d)", r.Baseline.Sent, r.BaselinePID)
		}
		checkLoadReport(t, r, "the service's own process", "load process peak RSS", "RSS growth", "soak:")
	})
	t.Run("baseline", func(t *testing.T) {
		o := loadOptions{
			Users: 20, Rate: 50, Duration: time.Second, Senders: 8,
			Drain: 30 * time.Second, Binary: bin, Log: io.Discard,
		}
		r, err := runLoad(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.ServicePID == 0 || r.BaselinePID == 0 || r.BaselinePID == r.ServicePID {
			t.Fatalf("service pid %d, baseline pid %d: want two processes of their own", r.ServicePID, r.BaselinePID)
		}
		if r.Baseline.Accepted == 0 || r.Baseline.Accepted != r.Baseline.Sent || r.Baseline.Failed != 0 {
			t.Errorf("baseline: %d sent, %d accepted, %d failed", r.Baseline.Sent, r.Baseline.Accepted, r.Baseline.Failed)
		}
		checkLoadReport(t, r, "wecombot load-baseline")
	})
}

func TestSoakGrowth(t *testing.T) {
	var s []rssSample
	for i := 1; i <= 30; i++ { // 5 minutes every 10 s: 100 MB, then 120 MB from 4 min on
		rss := int64(100_000)
		if i >= 24 {
			rss = 120_000
		}
		s = append(s, rssSample{At: time.Duration(i) * 10 * time.Second, RSS: rss})
	}
	g, first, last, ok := soakGrowth(s)
	if !ok || g != 20_000 || first != 100_000 || last != 120_000 {
		t.Errorf("soakGrowth = %d (%d -> %d), %v; want 20000 (100000 -> 120000)", g, first, last, ok)
	}
	if _, _, _, ok := soakGrowth(s[:1]); ok {
		t.Error("soakGrowth of one sample is ok")
	}
}

func TestLoadCommandFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-users", "0"},
		{"-service", "http://127.0.0.1:1"},
		{"-soak", "1m"}, // without a steady rate
		{"-soak", "1m", "-rate", "10", "-sample", "0s"},
		{"-settle", "-1s"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), append([]string{"load"}, args...), io.Discard, &stderr); code != 2 {
			t.Errorf("load %v: exit %d, want 2; stderr %s", args, code, stderr.String())
		}
	}
}

// TestLoadBaselineCommandRefuses: load-baseline acknowledges callbacks
// without storing them; it runs only when load starts it, on loopback.
func TestLoadBaselineCommandRefuses(t *testing.T) {
	public := writeConfig(t, edit(goodYAML, "addr:", `addr: "0.0.0.0:0"`))
	missing := filepath.Join(t.TempDir(), "none.yaml")
	for _, c := range []struct {
		name, env, config string
		code              int
		says              string
	}{
		{"not started by load", "", public, 2, "wecombot load"},
		{"no configuration", "1", missing, 1, missing},
		{"a public address", "1", public, 1, "not a loopback address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(loadChildEnv, c.env)
			var stderr bytes.Buffer
			if code := run(context.Background(), []string{"load-baseline", "-config", c.config}, io.Discard, &stderr); code != c.code {
				t.Errorf("exit %d, want %d; stderr %s", code, c.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.says) {
				t.Errorf("stderr does not say %q: %s", c.says, stderr.String())
			}
		})
	}
}
