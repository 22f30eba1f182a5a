package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/llm/llmtest"
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
	for _, field := range append([]string{
		"callbacks/s accepted", "ack p50", "ack p95", "ack p99", "ack max", "baseline", "ratio",
		"answers delivered/s", "answers/s while sending", "end-to-end p50", "end-to-end p99", "end-to-end max",
		"beyond the model p50", "beyond the model p99", "beyond the model max", "replies.unavailable",
		"duplicates", "losses", "gettoken calls", "model calls", "model 429s", "calls in flight max",
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
// process (as -cpuprofile does), in two phases, against a model that
// streams its answers over a while.
func TestLoadSmoke(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	o := loadOptions{
		Users: 20, Rate: 100, Duration: time.Second, ThenRate: 50, ThenDuration: time.Second,
		LLMLatency: 200 * time.Millisecond, Senders: 8,
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
	if !r.Stream {
		t.Error("the service does not stream by default")
	}
	if r.Then == nil || r.Then.Accepted == 0 || len(r.PhaseAnswerRate) != 2 {
		t.Fatalf("second phase: %+v, %d answer rates", r.Then, len(r.PhaseAnswerRate))
	}
	if !r.Then.Start.Before(r.Then.End) || r.Then.Start.Before(r.Service.End) {
		t.Errorf("phases: the first %v to %v, the second %v to %v", r.Service.Start, r.Service.End, r.Then.Start, r.Then.End)
	}
	checkLoadReport(t, r, "CPU profile", "whole load process", "over the backlog", "answers/s over backlog", "streamed")
}

// TestDriveMessages: -messages caps a run however long its phases are.
func TestDriveMessages(t *testing.T) {
	bot := newSimBot(loadBot, loadCorp, loadAgent)
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

// TestLoadModel checks the fake model of the load tool: "re: <message>",
// and with -llm-rate, OpenAI's 429 with Retry-After beyond the rate.
func TestLoadModel(t *testing.T) {
	// A rate so low that only the bucket's one call passes during the test.
	m := newLoadModel(loadOptions{LLMRate: 0.001, LLMRetryAfter: 1500 * time.Millisecond, LLMLatency: 10 * time.Millisecond})
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	defer m.Close()
	post := func(stream bool) (*http.Response, string) {
		t.Helper()
		body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"message 1"}]}`, stream)
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post(false)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"content":"re: message 1"`) {
		t.Errorf("first call: HTTP %d: %s", resp.StatusCode, body)
	}
	for _, stream := range []bool{true, false} {
		resp, body = post(stream)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
			t.Errorf("beyond the rate (stream %v): HTTP %d, Retry-After %q", stream, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if !strings.Contains(body, `"code":"rate_limit_exceeded"`) {
			t.Errorf("429 body: %s", body)
		}
	}
	if m.Calls() != 3 || m.limited.Load() != 2 {
		t.Errorf("%d calls, %d limited; want 3 and 2", m.Calls(), m.limited.Load())
	}

	plain := newLoadModel(loadOptions{})
	reply := plain.respond(llmtest.Request{Messages: []llmtest.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "re: a"}, {Role: "user", Content: "b"}}})
	if reply.Content != "re: b" || reply.Status != 0 || reply.Delay != 0 {
		t.Errorf("unlimited, no latency: %+v", reply)
	}
}

func TestParseLoadFlags(t *testing.T) {
	o, err := parseLoadFlags([]string{
		"-rate", "0", "-duration", "10s", "-then-rate", "1000", "-then-duration", "10s", "-messages", "4000",
		"-llm-latency", "5s", "-llm-rate", "10", "-llm-retry-after", "2s", "-max-concurrency", "50",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := loadOptions{Rate: 0, Duration: 10 * time.Second, ThenRate: 1000, ThenDuration: 10 * time.Second, Messages: 4000,
		LLMLatency: 5 * time.Second, LLMRate: 10, LLMRetryAfter: 2 * time.Second, MaxConcurrency: 50}
	if o.Rate != want.Rate || o.Duration != want.Duration || o.ThenRate != want.ThenRate || o.ThenDuration != want.ThenDuration ||
		o.Messages != want.Messages || o.LLMLatency != want.LLMLatency || o.LLMRate != want.LLMRate ||
		o.LLMRetryAfter != want.LLMRetryAfter || o.MaxConcurrency != want.MaxConcurrency {
		t.Errorf("parsed %+v", o)
	}
	if p := o.phases(); len(p) != 2 || p[1] != (loadPhase{Rate: 1000, Duration: 10 * time.Second}) {
		t.Errorf("phases %+v", p)
	}
	if o, _ := parseLoadFlags(nil, io.Discard); len(o.phases()) != 1 || o.LLMRetryAfter != time.Second || o.MaxConcurrency != 0 {
		t.Errorf("defaults: %+v", o)
	}
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
	var s []reading
	for i := 1; i <= 30; i++ { // 5 minutes every 10 s: 100 MB, then 120 MB from 4 min on
		rss := int64(100_000)
		if i >= 24 {
			rss = 120_000
		}
		s = append(s, reading{At: time.Duration(i) * 10 * time.Second, Value: rss})
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
		{"-workers", "16"}, // llm.max_concurrency replaced pipeline.workers
		{"-max-concurrency", "-1"},
		{"-llm-rate", "-1"},
		{"-llm-retry-after", "-1s"},
		{"-then-rate", "100"}, // without -then-duration
		{"-then-duration", "-1s"},
		{"-messages", "-1"},
		{"-messages", "2000000"},
		{"-soak", "1m", "-rate", "10", "-then-duration", "10s"},
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
