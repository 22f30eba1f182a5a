// Command wecombot-load measures a wecombot service. It runs `wecombot
// serve` as a child process against a WeCom simulator and a fake LLM that
// live in this process, drives encrypted callbacks at it, and prints what the
// service did beside a bare baseline (signature check, decrypt, XML parse)
// run as a process of its own in the same way.
//
// It is a measuring tool, not part of the product: it needs a wecombot
// executable (-wecombot), and the wecombot binary links none of this code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: wecombot-load [-wecombot PATH] [flags]

Runs PATH serve (default: the wecombot executable beside this one, else
wecombot on PATH) against a WeCom simulator and a fake LLM, drives encrypted
callbacks at it, and prints callbacks/s, ack and end-to-end latencies,
answers, duplicates, losses, the model's view and the service's memory,
beside a bare verify+decrypt+parse baseline. The service and the baseline
run with GOGC=400 GOMEMLIMIT=128MiB (the shipped image's) unless the
environment sets them.

flags:
`

// run is main without the process: testable. `wecombot-load baseline` is
// the baseline that a run starts as its own process; it is not for people.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == baselineCommand {
		return runBaseline(ctx, args[1:], stderr)
	}
	o, err := parseLoadFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	r, err := runLoad(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "wecombot-load: %v\n", err)
		return 1
	}
	r.print(stdout)
	return 0
}

// parseLoadFlags reads the flags. What is wrong with them is written to
// stderr; the error is then flag.ErrHelp for -h, or one that means exit
// status 2.
func parseLoadFlags(args []string, stderr io.Writer) (loadOptions, error) {
	fs := flag.NewFlagSet("wecombot-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	o := loadOptions{Log: stderr}
	fs.StringVar(&o.Binary, "wecombot", "", "the wecombot executable to measure; default: wecombot beside this executable, else on PATH")
	fs.IntVar(&o.Users, "users", 200, "simulated WeCom users")
	fs.Float64Var(&o.Rate, "rate", 0, "callbacks per second; 0 = as fast as possible")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send callbacks: the first phase (service and baseline each)")
	fs.Float64Var(&o.ThenRate, "then-rate", 0, "callbacks per second of a second phase right after the first (needs -then-duration); 0 = as fast as possible")
	fs.DurationVar(&o.ThenDuration, "then-duration", 0, "length of the second phase, reported apart as over the backlog; 0 = none")
	fs.IntVar(&o.Messages, "messages", 0, "stop after this many callbacks (a burst: -rate 0 -messages N); 0 = no cap")
	fs.DurationVar(&o.LLMLatency, "llm-latency", 0, "the fake LLM's whole answer time; streamed, the first token comes after a fifth of it (1s at most) and the rest spread up to it")
	fs.Float64Var(&o.LLMRate, "llm-rate", 0, "calls per second the fake LLM accepts, answering 429 beyond; 0 = unlimited")
	fs.DurationVar(&o.LLMRetryAfter, "llm-retry-after", time.Second, "the Retry-After of the fake LLM's 429s (whole seconds, rounded up)")
	fs.IntVar(&o.MaxConcurrency, "max-concurrency", 0, "the service's llm.max_concurrency (model calls in flight at most); 0 = its default")
	fs.IntVar(&o.Senders, "senders", 64, "callbacks in flight at most")
	fs.DurationVar(&o.Drain, "drain", 60*time.Second, "how long to wait for answers after the last callback")
	fs.DurationVar(&o.Settle, "settle", 2*time.Second, "wait this long after the service is ready before reading its idle RSS")
	fs.DurationVar(&o.Soak, "soak", 0, "soak: send at -rate for this long (instead of -duration), sample the service's RSS every -sample, no baseline")
	fs.DurationVar(&o.SampleEvery, "sample", 10*time.Second, "RSS sampling interval of -soak")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the service's CPU profile of the first phase to this file (through its server.pprof_addr); read it with go tool pprof")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wecombot-load: unexpected arguments %q\n", fs.Args())
		return o, errors.New("unexpected arguments")
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "wecombot-load: %v\n", err)
		return o, err
	}
	return o, nil
}
