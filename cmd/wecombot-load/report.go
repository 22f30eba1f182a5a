package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// loadReport is everything a run prints.
type loadReport struct {
	Opts               loadOptions
	GC                 []string  // the collector settings of the service and the baseline (childEnv)
	Service, Baseline  ingress   // the first phase
	Then               *ingress  // the second phase, when there is one: over the backlog
	PhaseAnswerRate    []float64 // distinct answers/s delivered within each phase's sending
	Stream             bool      // the service asked the model for streamed answers (llm.stream)
	MaxConcurrency     int       // llm.max_concurrency of the service
	Answered           int
	Duplicates         int
	Unavailable        int // deliveries of replies.unavailable: not answers
	Other              int // deliveries that are neither an answer nor replies.unavailable
	TokenFetches       int // gettoken calls the simulator answered
	Lost               int
	AnswerRate         float64 // distinct answers/s, first callback to last answer
	E2E                []time.Duration
	ModelCalls         int       // requests the fake model saw, refused ones included
	ModelLimited       int       // of them, answered 429 by -llm-rate
	InFlight           []reading // the fake model's calls in flight, first callback to last answer
	IdleRSS, HWMBefore int64     // kB, of the service's process
	HWMAfter           int64
	IdleAnon, IdleFile int64 // kB, the idle RSS's anonymous (heap, stacks) and file-backed (the binary's pages) parts
	EndRSS             int64 // kB, after the drain
	LoadHWM            int64 // kB, this process's own peak: generator, simulator, fake LLM
	ServicePID         int
	BaselinePID        int // 0: no baseline ran (a soak)
	Soak               []reading
	MessagesPerUser    float64
	NumCPU             int
}

// soakGrowth is the median RSS of the last minute of samples minus that of
// the first minute (kB), and the two medians.
func soakGrowth(samples []reading) (growth, first, last int64, ok bool) {
	if len(samples) < 2 {
		return 0, 0, 0, false
	}
	end := samples[len(samples)-1].At
	var a, b []int64
	for _, s := range samples {
		if s.At <= time.Minute {
			a = append(a, s.Value)
		}
		if s.At >= end-time.Minute {
			b = append(b, s.Value)
		}
	}
	median := func(v []int64) int64 {
		slices.Sort(v)
		return v[len(v)/2]
	}
	first, last = median(a), median(b)
	return last - first, first, last, true
}

// percentile of sorted durations; 0 when there are none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (r *loadReport) print(w io.Writer) {
	o := r.Opts
	perSecond := func(rate float64) string {
		if rate > 0 {
			return fmt.Sprintf("%g/s", rate)
		}
		return "as fast as possible"
	}
	run := fmt.Sprintf("rate %s for %s per target", perSecond(o.Rate), o.Duration)
	if o.ThenDuration > 0 {
		run += fmt.Sprintf(", then %s for %s (service only)", perSecond(o.ThenRate), o.ThenDuration)
	}
	if o.Messages > 0 {
		run += fmt.Sprintf(", %d callbacks at most", o.Messages)
	}
	model := fmt.Sprintf("LLM latency %s", o.LLMLatency)
	if r.Stream && o.LLMLatency > 0 {
		model += fmt.Sprintf(" streamed (first token at %s)", min(o.LLMLatency/5, time.Second))
	}
	if o.LLMRate > 0 {
		model += fmt.Sprintf(", %g calls/s then 429 (Retry-After %s)", o.LLMRate, o.LLMRetryAfter)
	}
	concurrency := strconv.Itoa(r.MaxConcurrency)
	if o.MaxConcurrency == 0 {
		concurrency += " (default)"
	}
	fmt.Fprintf(w, "wecombot-load: %d users, %s, %s, llm.max_concurrency %s, %d senders, drain %s, %d CPUs\n",
		o.Users, run, model, concurrency, o.Senders, o.Drain, r.NumCPU)
	baseline := ""
	if r.BaselinePID != 0 {
		baseline = fmt.Sprintf(", then the baseline as its own (pid %d, wecombot-load baseline)", r.BaselinePID)
	}
	fmt.Fprintf(w, "the service runs as its own process (pid %d, wecombot serve)%s; generator, WeCom simulator and fake LLM in this one; all on loopback\n", r.ServicePID, baseline)
	env := "service and baseline environment"
	if r.BaselinePID == 0 {
		env = "service environment"
	}
	fmt.Fprintf(w, "%s: %s\n", env, strings.Join(r.GC, " "))
	if o.Soak > 0 {
		fmt.Fprintf(w, "soak: %s at %g/s, service RSS sampled every %s; no baseline\n", o.Soak, o.Rate, o.SampleEvery)
	}
	ratio := func(s, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", s/b)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	row := func(name, s, b, rt string) {
		if o.Soak > 0 && name != "" { // no baseline
			b, rt = "-", ""
		}
		fmt.Fprintf(w, "  %-24s %14s %14s %8s\n", name, s, b, rt)
	}
	line := func(name, value, note string) {
		if note != "" {
			note = "   (" + note + ")"
		}
		fmt.Fprintf(w, "  %-24s %14s%s\n", name, value, note)
	}
	acks := []struct {
		name string
		p    float64
	}{{"ack p50", 50}, {"ack p95", 95}, {"ack p99", 99}, {"ack max", 100}}
	first := "ack = callback POST sent -> 200 received"
	if r.Then != nil {
		first = "the first phase; " + first
	}
	fmt.Fprintf(w, "ingress (%s)\n", first)
	row("", "service", "baseline", "ratio")
	sv, bl := r.Service, r.Baseline
	row("callbacks sent", strconv.Itoa(sv.Sent), strconv.Itoa(bl.Sent), ratio(float64(sv.Sent), float64(bl.Sent)))
	row("callbacks failed/non-200", strconv.Itoa(sv.Failed), strconv.Itoa(bl.Failed), "")
	row("callbacks/s accepted", fmt.Sprintf("%.1f", sv.rate()), fmt.Sprintf("%.1f", bl.rate()), ratio(sv.rate(), bl.rate()))
	for _, p := range acks {
		s, b := percentile(sv.Ack, p.p), percentile(bl.Ack, p.p)
		row(p.name, ms(s), ms(b), ratio(float64(s), float64(b)))
	}
	if th := r.Then; th != nil {
		fmt.Fprintf(w, "over the backlog (the second phase, %s for %s right after the first; service only)\n", perSecond(o.ThenRate), o.ThenDuration)
		line("callbacks sent", strconv.Itoa(th.Sent), "")
		line("callbacks failed/non-200", strconv.Itoa(th.Failed), "")
		line("callbacks/s accepted", fmt.Sprintf("%.1f", th.rate()), "")
		for _, p := range acks {
			line(p.name, ms(percentile(th.Ack, p.p)), "")
		}
	}
	fmt.Fprintln(w, "answers (service only; end-to-end = callback sent -> answer at message/send)")
	line("answered", strconv.Itoa(r.Answered), "the model's answer, matched by content")
	line("replies.unavailable", strconv.Itoa(r.Unavailable), "the service gave up on the model: not answered")
	line("other deliveries", strconv.Itoa(r.Other), "neither; e.g. an answer sent in parts")
	line("answers delivered/s", fmt.Sprintf("%.1f", r.AnswerRate), "first callback to last answer")
	for p, rate := range r.PhaseAnswerRate {
		name, note := "answers/s while sending", "delivered while the callbacks were sent"
		if r.Then != nil {
			note = "delivered during the first phase"
		}
		if p == 1 {
			name, note = "answers/s over backlog", "delivered during the second phase"
		}
		line(name, fmt.Sprintf("%.1f", rate), note)
	}
	line("end-to-end p50", ms(percentile(r.E2E, 50)), "")
	line("end-to-end p99", ms(percentile(r.E2E, 99)), "")
	line("end-to-end max", ms(percentile(r.E2E, 100)), "")
	for _, p := range []struct {
		name string
		p    float64
	}{{"beyond the model p50", 50}, {"beyond the model p99", 99}, {"beyond the model max", 100}} {
		note := ""
		if p.p == 50 {
			note = fmt.Sprintf("end-to-end minus the model's %s", o.LLMLatency)
		}
		line(p.name, ms(percentile(r.E2E, p.p)-o.LLMLatency), note)
	}
	line("duplicates", strconv.Itoa(r.Duplicates), "")
	line("losses", strconv.Itoa(r.Lost), fmt.Sprintf("accepted without an answer after the %s drain", o.Drain))
	line("gettoken calls", strconv.Itoa(r.TokenFetches), "one token lifetime: want 1")
	fmt.Fprintln(w, "model (the fake LLM, as it saw the service)")
	line("model calls", strconv.Itoa(r.ModelCalls), "retries included")
	line("model 429s", strconv.Itoa(r.ModelLimited), "calls beyond -llm-rate")
	peak := int64(0)
	for _, s := range r.InFlight {
		peak = max(peak, s.Value)
	}
	line("calls in flight max", strconv.FormatInt(peak, 10), fmt.Sprintf("read every %s", inFlightEvery))
	if len(r.InFlight) > 0 {
		fmt.Fprintf(w, "  calls in flight every %s from the first callback to the last answer:\n", inFlightEvery)
		printTimeline(w, r.InFlight, inFlightEvery)
	}
	fmt.Fprintf(w, "memory (the service's own process, kB: /proc/%d/status VmRSS, VmHWM)\n", r.ServicePID)
	fmt.Fprintf(w, "  %-24s %14d   (anonymous %d + file-backed %d)\n", fmt.Sprintf("RSS idle (ready + %s)", o.Settle), r.IdleRSS, r.IdleAnon, r.IdleFile)
	fmt.Fprintf(w, "  %-24s %14d\n", "peak RSS before load", r.HWMBefore)
	fmt.Fprintf(w, "  %-24s %14d\n", "peak RSS after service", r.HWMAfter)
	fmt.Fprintf(w, "  %-24s %14d   (after the drain)\n", "RSS at the end", r.EndRSS)
	fmt.Fprintf(w, "  %-24s %14d   (generator, simulator, fake LLM: not the service)\n", "load process peak RSS", r.LoadHWM)
	if o.Soak > 0 {
		fmt.Fprintln(w, "soak: service RSS, kB (time since the first callback)")
		for _, s := range r.Soak {
			fmt.Fprintf(w, "  %8s %10d\n", s.At.Round(min(o.SampleEvery, time.Second)), s.Value)
		}
		if g, first, last, ok := soakGrowth(r.Soak); ok {
			fmt.Fprintf(w, "  %-24s %14d   (median of the last minute %d - median of the first minute %d; %+.1f%%)\n",
				"RSS growth", g, last, first, 100*float64(g)/float64(first))
		}
	}
	// WeCom's pacing lets 10 through at once, then one per 3 s.
	if r.MessagesPerUser > 10+(o.Duration+o.ThenDuration).Seconds()/3 {
		fmt.Fprintf(w, "note: %.1f messages per user; WeCom pacing (10 at once, then 1 per 3 s per user) delays answers past the 10th,\n"+
			"      so end-to-end figures measure the pacing. Use -users >= rate x duration / 10.\n", r.MessagesPerUser)
	}
	if r.Lost > 0 {
		fmt.Fprintln(w, "note: unanswered messages may be backlog (stored, answered later), not lost;\n"+
			"      raise -drain to tell.")
	}
}

// printTimeline prints every reading, ten seconds' worth a line, so a dip
// and its recovery show at a glance.
func printTimeline(w io.Writer, readings []reading, every time.Duration) {
	perLine := max(1, int(10*time.Second/every))
	for i := 0; i < len(readings); i += perLine {
		fmt.Fprintf(w, "  %6s", readings[i].At.Round(every))
		for _, r := range readings[i:min(i+perLine, len(readings))] {
			fmt.Fprintf(w, " %4d", r.Value)
		}
		fmt.Fprintln(w)
	}
}
