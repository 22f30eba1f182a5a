package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
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
	accepted := r.Service.Accepted
	if r.Then != nil {
		accepted += r.Then.Accepted
	}
	if r.Answered != accepted {
		t.Errorf("answered %d of %d accepted", r.Answered, accepted)
	}
	if r.Unavailable != 0 || r.Other != 0 {
		t.Errorf("%d replies.unavailable, %d other deliveries; want only answers", r.Unavailable, r.Other)
	}
	if r.ModelCalls < r.Answered || len(r.InFlight) == 0 {
		t.Errorf("%d model calls for %d answers, %d in-flight readings", r.ModelCalls, r.Answered, len(r.InFlight))
	}
	if r.ServicePID == 0 {
		t.Error("no pid for the service's process")
	}
	for _, field := range append([]string{
		"callbacks/s accepted", "ack p50", "ack p95", "ack p99", "ack max", "baseline", "ratio",
		"answers delivered/s", "answers/s while sending", "end-to-end p50", "end-to-end p99", "end-to-end max",
		"beyond the model p50", "beyond the model p99", "beyond the model max", "replies.unavailable",
		"duplicates", "losses", "gettoken calls", "model calls", "model 429s", "calls in flight max",
		"the service's own process", "RSS idle", "peak RSS before load", "peak RSS after service", "RSS at the end",
		"load process peak RSS", "environment: GOGC=", " GOMEMLIMIT=",
	}, fields...) {
		if !strings.Contains(out.String(), field) {
			t.Errorf("report has no %q", field)
		}
	}
	if r.IdleRSS <= 0 || r.HWMAfter < r.HWMBefore || r.EndRSS <= 0 || r.LoadHWM <= 0 {
		t.Errorf("memory: idle %d, peak before %d, after %d, end %d, load process %d kB", r.IdleRSS, r.HWMBefore, r.HWMAfter, r.EndRSS, r.LoadHWM)
	}
	return out.String()
}

// TestLoadChild measures the real wecombot binary as a child process: in
// two phases against a model that streams its answers over a while, beside
// the baseline as a process of its own; and in a short soak, whose memory
// figures are sampled.
func TestLoadChild(t *testing.T) {
	bin := wecombotBinary(t)
	t.Run("two phases and the baseline", func(t *testing.T) {
		o := loadOptions{
			Binary: bin, Users: 20, Rate: 100, Duration: time.Second, ThenRate: 50, ThenDuration: time.Second,
			LLMLatency: 200 * time.Millisecond, Senders: 8, Drain: 30 * time.Second, Settle: 100 * time.Millisecond, Log: io.Discard,
		}
		r, err := runLoad(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.BaselinePID == 0 || r.BaselinePID == r.ServicePID {
			t.Fatalf("service pid %d, baseline pid %d: want two processes of their own", r.ServicePID, r.BaselinePID)
		}
		if r.Baseline.Accepted == 0 || r.Baseline.Accepted != r.Baseline.Sent || r.Baseline.Failed != 0 {
			t.Errorf("baseline: %d sent, %d accepted, %d failed", r.Baseline.Sent, r.Baseline.Accepted, r.Baseline.Failed)
		}
		if !r.Stream {
			t.Error("the service does not stream by default")
		}
		if r.MaxConcurrency <= 0 {
			t.Errorf("llm.max_concurrency %d reported", r.MaxConcurrency)
		}
		if r.Then == nil || r.Then.Accepted == 0 || len(r.PhaseAnswerRate) != 2 {
			t.Fatalf("second phase: %+v, %d answer rates", r.Then, len(r.PhaseAnswerRate))
		}
		if !r.Then.Start.Before(r.Then.End) || r.Then.Start.Before(r.Service.End) {
			t.Errorf("phases: the first %v to %v, the second %v to %v", r.Service.Start, r.Service.End, r.Then.Start, r.Then.End)
		}
		checkLoadReport(t, r, "wecombot-load baseline", "service and baseline environment:", "over the backlog", "answers/s over backlog", "streamed", "(default)")
	})
	t.Run("soak", func(t *testing.T) {
		o := loadOptions{
			Binary: bin, Users: 20, Rate: 50, Soak: 3 * time.Second, SampleEvery: 500 * time.Millisecond, Senders: 8,
			MaxConcurrency: 4, Drain: 30 * time.Second, Settle: 100 * time.Millisecond, Log: io.Discard,
			CPUProfile: filepath.Join(t.TempDir(), "cpu.pprof"),
		}
		r, err := runLoad(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		// The profile is the service's, taken through server.pprof_addr:
		// gzipped protobuf naming the service's own functions.
		prof, err := os.ReadFile(o.CPUProfile)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(prof))
		if err != nil {
			t.Fatalf("-cpuprofile wrote %d bytes that are not a gzipped profile: %v", len(prof), err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil || !(bytes.Contains(raw, []byte("wecombot/adapter.")) || bytes.Contains(raw, []byte("wecombot/storage."))) {
			t.Errorf("the CPU profile (%d bytes, %v) names no function of the service's adapter or storage", len(raw), err)
		}
		if len(r.Soak) < 3 {
			t.Errorf("%d RSS samples in a 3 s soak every 500 ms", len(r.Soak))
		}
		if r.Baseline.Sent != 0 || r.BaselinePID != 0 {
			t.Errorf("a soak drove the baseline too (%d callbacks, pid %d)", r.Baseline.Sent, r.BaselinePID)
		}
		if r.MaxConcurrency != 4 {
			t.Errorf("llm.max_concurrency %d reported, want the -max-concurrency 4", r.MaxConcurrency)
		}
		out := checkLoadReport(t, r, "RSS growth", "soak:", "llm.max_concurrency 4,")
		if strings.Contains(out, "wecombot-load baseline") {
			t.Error("a soak's report names a baseline process")
		}
	})
}

func TestServiceMaxConcurrency(t *testing.T) {
	if serviceMaxConcurrency != adapter.DefaultMaxConcurrency {
		t.Errorf("the report's default llm.max_concurrency %d, the service's %d", serviceMaxConcurrency, adapter.DefaultMaxConcurrency)
	}
}

// TestDriveMessages: -messages caps a run however long its phases are.
func TestDriveMessages(t *testing.T) {
	bot := newLoadBot()
	base := httptest.NewServer(baselineHandler(bot.Token, bot.EncodingAESKey, bot.CorpID))
	defer base.Close()
	cb := bot.callback(base.URL)
	o := loadOptions{Users: 7, Senders: 4, Messages: 50}
	samples, in := drive(context.Background(), cb, []loadPhase{{Duration: time.Hour}, {Rate: 10, Duration: time.Hour}}, o)
	if len(samples) != 50 || in[0].Sent != 50 || in[0].Accepted != 50 || in[1].Sent != 0 {
		t.Errorf("%d callbacks, phases sent %d (accepted %d) and %d; want 50, all in the first", len(samples), in[0].Sent, in[0].Accepted, in[1].Sent)
	}
	contents := map[string]bool{}
	for _, s := range samples {
		contents[s.content] = true
	}
	if len(contents) != 50 {
		t.Errorf("%d distinct messages of 50", len(contents))
	}
}
