package main

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/silenceper/wechat/v2/util"
	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// Load identities: like the demo's, they exist only in the simulator.
const (
	loadCorp   = "wwload000000001"
	loadAgent  = 1000003
	loadBot    = "load"
	loadPrefix = "re: " // the fake LLM answers "re: <message>", so answers match messages by content
	// loadMaxMessages bounds one run whatever the flags say.
	loadMaxMessages = 1_000_000
)

// loadOptions configure `wecombot load`.
type loadOptions struct {
	Users    int
	Rate     float64 // callbacks/s; 0 = as fast as the senders go
	Duration time.Duration
	// ThenRate and ThenDuration, when ThenDuration is set, are a second
	// phase that follows the first at once: a flood, then a steady rate
	// over the backlog it left. The baseline runs the first phase only.
	ThenRate     float64
	ThenDuration time.Duration
	Messages     int // callbacks in all, at most; 0 = as many as the phases send
	// LLMLatency is the fake model's whole answer time; streamed, its
	// first token comes after a fifth of it (a second at most).
	LLMLatency time.Duration
	// LLMRate, when set, is the calls/s the fake model accepts; it answers
	// those beyond with 429 and Retry-After: LLMRetryAfter.
	LLMRate        float64
	LLMRetryAfter  time.Duration
	MaxConcurrency int           // llm.max_concurrency of the service; 0: its default
	Senders        int           // callbacks in flight at most
	Drain          time.Duration // how long to wait for answers after the last callback
	CPUProfile     string        // file for a CPU profile of the sending phase
	Log            io.Writer     // the service's own log (errors only)
	// InProcess runs the service in this process (Main): memory figures
	// are then the whole process's.
	// Otherwise the service is a child process, `Binary serve -config …`,
	// and the memory figures are its own. A CPU profile needs InProcess.
	InProcess bool
	Binary    string        // the wecombot executable for the child; "" = this one
	Settle    time.Duration // after /readyz, before the idle RSS is read
	// Soak, when set, sends for this long instead of Duration, samples the
	// service's RSS every SampleEvery, and skips the baseline.
	Soak        time.Duration
	SampleEvery time.Duration
}

// phases are the stretches of the run at one rate each, in order.
func (o loadOptions) phases() []loadPhase {
	p := []loadPhase{{Rate: o.Rate, Duration: o.Duration}}
	if o.ThenDuration > 0 {
		p = append(p, loadPhase{Rate: o.ThenRate, Duration: o.ThenDuration})
	}
	return p
}

// loadPhase is a stretch of the run at one rate.
type loadPhase struct {
	Rate     float64 // callbacks/s; 0 = as fast as the senders go
	Duration time.Duration
}

// reading is a gauge's value at a moment of the run: the service's RSS
// (kB) in a soak, or the fake model's calls in flight.
type reading struct {
	At    time.Duration // since the first callback
	Value int64
}

// ingress is what one target did with the callbacks of one phase.
type ingress struct {
	Sent, Accepted, Failed int
	// Start and End bound the phase's sending: End is when its last
	// callback was handed to a sender.
	Start, End time.Time
	Elapsed    time.Duration   // Start to the last ack of the phase's callbacks
	Ack        []time.Duration // accepted callbacks only, sorted
}

func (in ingress) rate() float64 {
	if in.Elapsed <= 0 {
		return 0
	}
	return float64(in.Accepted) / in.Elapsed.Seconds()
}

// loadReport is everything `wecombot load` prints.
type loadReport struct {
	Opts               loadOptions
	Service, Baseline  ingress   // the first phase
	Then               *ingress  // the second phase, when there is one: over the backlog
	PhaseAnswerRate    []float64 // distinct answers/s delivered within each phase's sending
	Stream             bool      // llm.stream of the service
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
	IdleRSS, HWMBefore int64     // kB, of the service's process (the whole load process in-process)
	HWMAfter           int64
	IdleAnon, IdleFile int64 // kB, the idle RSS's anonymous (heap, stacks) and file-backed (the binary's pages) parts
	EndRSS             int64 // kB, after the drain
	LoadHWM            int64 // kB, the load process's own peak, when the service is a child
	ServicePID         int   // 0: the service ran in this process
	BaselinePID        int   // 0: the baseline ran in this process
	Soak               []reading
	MessagesPerUser    float64
	NumCPU             int
}

// runLoadCommand is `wecombot load`. It has its own flags, which the other
// commands do not share.
func runLoadCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseLoadFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	r, err := runLoad(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "wecombot load: %v\n", err)
		return 1
	}
	r.print(stdout)
	return 0
}

// parseLoadFlags reads the load command's flags. What is wrong with them
// is written to stderr; the error is then flag.ErrHelp for -h, or one that
// means exit status 2.
func parseLoadFlags(args []string, stderr io.Writer) (loadOptions, error) {
	fs := flag.NewFlagSet("wecombot load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := loadOptions{Log: stderr}
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
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the service's sending phase (whole process) to this file; implies -inprocess")
	fs.BoolVar(&o.InProcess, "inprocess", false, "run the service in this process (memory figures are then the whole process's) instead of as a child process")
	fs.DurationVar(&o.Settle, "settle", 2*time.Second, "wait this long after the service is ready before reading its idle RSS")
	fs.DurationVar(&o.Soak, "soak", 0, "soak: send at -rate for this long (instead of -duration), sample the service's RSS every -sample, no baseline")
	fs.DurationVar(&o.SampleEvery, "sample", 10*time.Second, "RSS sampling interval of -soak")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "wecombot load: %v\n", err)
		return o, err
	}
	return o, nil
}

// validate reports every flag out of range together.
func (o loadOptions) validate() error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if o.Users <= 0 || o.Senders <= 0 || o.Duration <= 0 {
		bad("-users, -senders and -duration must be positive")
	}
	if o.Rate < 0 || o.ThenRate < 0 || o.ThenDuration < 0 || o.Messages < 0 || o.LLMLatency < 0 || o.LLMRate < 0 ||
		o.LLMRetryAfter < 0 || o.MaxConcurrency < 0 || o.Drain < 0 || o.Settle < 0 {
		bad("-rate, -then-rate, -then-duration, -messages, -llm-latency, -llm-rate, -llm-retry-after, -max-concurrency, -drain and -settle must not be negative")
	}
	if o.ThenRate > 0 && o.ThenDuration == 0 {
		bad("-then-rate needs -then-duration")
	}
	if o.Messages > loadMaxMessages {
		bad("-messages is at most %d", loadMaxMessages)
	}
	if o.Soak < 0 || (o.Soak > 0 && (o.Rate <= 0 || o.SampleEvery <= 0)) {
		bad("-soak needs a steady -rate (> 0) and a positive -sample")
	}
	if o.Soak > 0 && o.ThenDuration > 0 {
		bad("-soak is one phase: no -then-duration")
	}
	return errors.Join(problems...)
}

// runLoad starts the simulator and the fake LLM in this process, and the
// service as a child process (or in this process with o.InProcess), drives
// the service, then the bare baseline, with the same generator for the same
// duration.
func runLoad(ctx context.Context, o loadOptions) (*loadReport, error) {
	if o.Soak > 0 {
		o.Duration = o.Soak
	}
	if o.CPUProfile != "" {
		o.InProcess = true // the profile is of this process
	}
	r := &loadReport{Opts: o, NumCPU: runtime.NumCPU()}
	dir, err := os.MkdirTemp("", "wecombot-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	bot := newSimBot(loadBot, loadCorp, loadAgent)
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{bot.simApp()}})
	simSrv, simURL, err := serveHandler(sim.Handler(), "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer simSrv.Close()
	fake := newLoadModel(o)
	llmSrv := httptest.NewServer(fake.Handler())
	defer llmSrv.Close()
	defer fake.Close() // before llmSrv.Close: it ends requests still waiting

	cfg := defaults()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Server.ShutdownTimeout = "2s"
	cfg.Storage.DSN = filepath.Join(dir, "load.db")
	cfg.WeCom.APIBase = simURL
	cfg.LLM.BaseURL = llmSrv.URL + "/v1"
	cfg.LLM.APIKey = "sk-load"
	cfg.LLM.Timeout = (o.LLMLatency + 30*time.Second).String()
	cfg.Admin.Password = randomHex(8)
	cfg.Log.Level = "error"
	if o.MaxConcurrency > 0 {
		cfg.LLM.MaxConcurrency = o.MaxConcurrency
	}
	cfg.Bots = []BotConfig{bot}
	r.Stream, r.MaxConcurrency = cfg.LLM.Stream, cfg.LLM.MaxConcurrency
	var svc *loadService
	if o.InProcess {
		svc, err = startInProcess(ctx, &cfg, o)
	} else {
		svc, err = startChild(ctx, &cfg, dir, o, "serve")
	}
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	r.ServicePID = svc.pid

	client := loadClient(o.Senders)
	defer client.CloseIdleConnections()
	cb := bot.callback("http://" + svc.addr)
	cb.HTTPClient = client

	if svc.pid == 0 {
		runtime.GC()
	} else if o.Settle > 0 {
		select {
		case <-time.After(o.Settle):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.IdleRSS, _ = procStatus(svc.pid, "VmRSS")
	r.IdleAnon, _ = procStatus(svc.pid, "RssAnon")
	r.IdleFile, _ = procStatus(svc.pid, "RssFile")
	r.HWMBefore, _ = procStatus(svc.pid, "VmHWM")
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	stopSampling := func() []reading { return nil }
	if o.Soak > 0 {
		stopSampling = sampleEvery(o.SampleEvery, func() (int64, error) { return procStatus(svc.pid, "VmRSS") })
	}
	stopInFlight := sampleEvery(inFlightEvery, func() (int64, error) { return int64(fake.InFlight()), nil })
	samples, in := drive(ctx, cb, o.phases(), o)
	r.Soak = stopSampling()
	if o.CPUProfile != "" {
		pprof.StopCPUProfile() // the sending phase only: what the acks cost
	}
	r.Service = in[0]
	if len(in) > 1 {
		r.Then = &in[1]
	}
	lastAnswer := r.collectAnswers(ctx, sim, samples, in, cfg.Replies.Unavailable)
	r.InFlight = stopInFlight()
	for i, s := range r.InFlight {
		if !lastAnswer.IsZero() && s.At > lastAnswer.Sub(in[0].Start) {
			r.InFlight = r.InFlight[:i+1] // the first sample after the last answer
			break
		}
	}
	r.ModelCalls, r.ModelLimited = fake.Calls(), int(fake.limited.Load())
	r.TokenFetches = sim.TotalTokenFetches()
	r.HWMAfter, _ = procStatus(svc.pid, "VmHWM")
	r.EndRSS, _ = procStatus(svc.pid, "VmRSS")
	if svc.pid != 0 {
		r.LoadHWM, _ = procStatus(0, "VmHWM")
	}
	accepted := 0
	for _, s := range samples {
		if s.ok {
			accepted++
		}
	}
	r.MessagesPerUser = float64(accepted) / float64(o.Users)
	// Connections the client dialled but never used count as new, not
	// idle, and would hold up the server's shutdown.
	client.CloseIdleConnections()
	if err := svc.stop(); err != nil && o.LLMLatency == 0 {
		fmt.Fprintf(o.Log, "wecombot load: service shutdown: %v\n", err)
	}
	if o.Soak > 0 {
		return r, ctx.Err() // the baseline's memory is of no interest
	}

	// The floor runs the way the service ran: as its own process, or in
	// this one. In this process it would skip the cross-process wakeups
	// that every callback to the service pays (BENCHMARKS.md).
	baseURL := ""
	if svc.pid == 0 {
		base := httptest.NewServer(baselineHandler(bot.Token, bot.EncodingAESKey, bot.CorpID))
		defer base.Close()
		baseURL = base.URL
	} else {
		base, err := startChild(ctx, &cfg, dir, o, "load-baseline")
		if err != nil {
			return nil, err
		}
		defer base.stop()
		r.BaselinePID = base.pid
		baseURL = "http://" + base.addr
	}
	bcb := bot.callback(baseURL)
	bcb.HTTPClient = client
	_, bin := drive(ctx, bcb, o.phases()[:1], o)
	r.Baseline = bin[0]
	return r, ctx.Err()
}

// inFlightEvery is how often the fake model's calls in flight are read:
// often enough that a backoff of a second or two shows.
const inFlightEvery = 500 * time.Millisecond

// loadModel is the fake model of a load run. It answers "re: <message>"
// in -llm-latency, streamed over that time when the service streams, and
// with -llm-rate refuses the calls beyond that rate as a provider's rate
// limit does: 429, OpenAI's error body, Retry-After.
type loadModel struct {
	*llmtest.Server
	o       loadOptions
	limit   *rate.Limiter // nil: unlimited
	limited atomic.Int64  // calls answered 429
}

func newLoadModel(o loadOptions) *loadModel {
	m := &loadModel{o: o}
	if o.LLMRate > 0 {
		// A bucket of one second's calls: the rate holds over any second,
		// and a backlog's first second is not refused call by call.
		m.limit = rate.NewLimiter(rate.Limit(o.LLMRate), max(1, int(math.Ceil(o.LLMRate))))
	}
	m.Server = llmtest.New(m.respond)
	return m
}

func (m *loadModel) respond(req llmtest.Request) llmtest.Reply {
	if m.limit != nil && !m.limit.Allow() {
		m.limited.Add(1)
		after := int(math.Ceil(m.o.LLMRetryAfter.Seconds()))
		return llmtest.Reply{
			Status:  http.StatusTooManyRequests,
			Content: fmt.Sprintf("Rate limit reached for requests per second: Limit %g. Please try again in %ds.", m.o.LLMRate, after),
			Header:  http.Header{"Retry-After": {strconv.Itoa(after)}},
		}
	}
	last := ""
	for _, msg := range req.Messages {
		if msg.Role == "user" {
			last = msg.Content
		}
	}
	return llmtest.Spread(req, loadPrefix+last, min(m.o.LLMLatency/5, time.Second), m.o.LLMLatency)
}

// loadService is the service under test: its address, its process (0 when
// it runs in this one) and how to stop it (idempotent).
type loadService struct {
	addr string
	pid  int
	stop func() error
}

func startInProcess(ctx context.Context, cfg *Config, o loadOptions) (*loadService, error) {
	if problems := cfg.validate(); len(problems) > 0 {
		return nil, fmt.Errorf("load configuration: %v", errors.Join(problems...))
	}
	m := NewMain(cfg, o.Log)
	if err := m.Open(ctx); err != nil {
		return nil, err
	}
	return &loadService{addr: m.Addr, stop: m.Close}, nil
}

// startChild writes cfg to dir and runs `wecombot <command> -config` on it
// as a child process (serve: the service; load-baseline: the baseline), on a
// free loopback port, until its /readyz answers 200.
func startChild(ctx context.Context, cfg *Config, dir string, o loadOptions, command string) (*loadService, error) {
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("the wecombot executable for the service: %w", err)
		}
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cfg.Server.Addr = addr // the child listens there next; nothing else here dials 0-ports
	if problems := cfg.validate(); len(problems) > 0 {
		return nil, fmt.Errorf("load configuration: %v", errors.Join(problems...))
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, command, "-config", path)
	cmd.Env = append(os.Environ(), loadChildEnv+"=1")
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, command, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case stopErr = <-exited:
			case <-time.After(mustDuration(cfg.Server.ShutdownTimeout) + 10*time.Second):
				_ = cmd.Process.Kill()
				stopErr = fmt.Errorf("killed after the shutdown timeout: %v", <-exited)
			}
		})
		return stopErr
	}
	svc := &loadService{addr: addr, pid: cmd.Process.Pid, stop: stop}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return svc, nil
			}
		}
		select {
		case err := <-exited:
			exited <- err // for stop
			stop()
			return nil, fmt.Errorf("wecombot %s exited before it was ready: %v", command, err)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("wecombot %s on %s was not ready within 30s", command, addr)
		}
	}
}

// freeLoopbackAddr is a loopback address with a port free at the moment,
// for a process started next to listen on.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// sampleEvery reads a gauge every interval until the returned function is
// called, which returns the readings; failed reads are left out.
func sampleEvery(every time.Duration, read func() (int64, error)) func() []reading {
	quit, done := make(chan struct{}), make(chan []reading)
	go func() {
		var out []reading
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				done <- out
				return
			case <-t.C:
				if v, err := read(); err == nil {
					out = append(out, reading{At: time.Since(start), Value: v})
				}
			}
		}
	}()
	return func() []reading {
		close(quit)
		return <-done
	}
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

// loadClient keeps a connection per sender, so the run measures requests,
// not TCP handshakes and exhausted ephemeral ports.
func loadClient(senders int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = senders
	t.MaxIdleConnsPerHost = senders
	return &http.Client{Transport: t, Timeout: 5 * time.Second} // WeCom's own callback timeout
}

// sample is one callback as the generator saw it.
type sample struct {
	user, content string
	phase         int
	start         time.Time
	ack           time.Duration
	ok            bool
}

// drive sends callbacks from o.Users users round-robin, phase after phase,
// each at its rate or as fast as o.Senders concurrent senders go, and at
// most o.Messages in all. Every message has its own MsgId and content. It
// returns every callback and what the target did in each phase.
func drive(ctx context.Context, cb *wecomsim.Callback, phases []loadPhase, o loadOptions) ([]sample, []ingress) {
	jobs := make(chan loadJob)
	results := make([][]sample, o.Senders)
	baseID := time.Now().UnixNano()
	var wg sync.WaitGroup
	for w := range o.Senders {
		wg.Go(func() {
			for j := range jobs {
				user := fmt.Sprintf("load-u%05d", j.i%o.Users)
				content := fmt.Sprintf("message %d from %s", j.i, user)
				plain := wecomsim.TextXML(loadCorp, user, content, baseID+int64(j.i), time.Now().Unix(), loadAgent)
				s := sample{user: user, content: content, phase: j.phase, start: time.Now()}
				// The run's end cancels ctx; a callback in flight then is
				// still waited for, as WeCom would.
				status, body, err := cb.Post(context.WithoutCancel(ctx), plain)
				s.ack = time.Since(s.start)
				s.ok = err == nil && status == http.StatusOK && body == ""
				results[w] = append(results[w], s)
			}
		})
	}
	limit := loadMaxMessages
	if o.Messages > 0 {
		limit = o.Messages
	}
	in := make([]ingress, len(phases))
	next := 0
	for p, ph := range phases {
		in[p].Start = time.Now()
		next = feed(ctx, ph, p, next, limit, jobs)
		in[p].End = time.Now()
	}
	close(jobs)
	wg.Wait()
	var all []sample
	for _, rs := range results {
		all = append(all, rs...)
	}
	for _, s := range all {
		ph := &in[s.phase]
		ph.Sent++
		if s.ok {
			ph.Accepted++
			ph.Ack = append(ph.Ack, s.ack)
		} else {
			ph.Failed++
		}
		ph.Elapsed = max(ph.Elapsed, s.start.Add(s.ack).Sub(ph.Start))
	}
	for p := range in {
		in[p].Elapsed = max(in[p].Elapsed, in[p].End.Sub(in[p].Start))
		slices.Sort(in[p].Ack)
	}
	return all, in
}

// loadJob is the i-th callback of a run, sent in a phase.
type loadJob struct{ i, phase int }

// feed hands jobs next, next+1, … to the senders for one phase: at its
// rate, each at its time from the phase's start (late ones go at once, so
// a slow target gets the phase's count still), or as fast as they are
// taken. It stops at the phase's end, at limit or when ctx ends, and
// returns the next job's number.
func feed(ctx context.Context, ph loadPhase, phase, next, limit int, jobs chan<- loadJob) int {
	ctx, cancel := context.WithTimeout(ctx, ph.Duration)
	defer cancel()
	var interval time.Duration
	if ph.Rate > 0 {
		interval = time.Duration(float64(time.Second) / ph.Rate)
	}
	start := time.Now()
	for k := 0; next < limit; k++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return next
				}
			}
		}
		select {
		case jobs <- loadJob{i: next, phase: phase}:
			next++
		case <-ctx.Done():
			return next
		}
	}
	return next
}

// collectAnswers waits up to o.Drain for an answer to every accepted
// callback, then a moment more for duplicates, and returns when the last
// answer arrived. An answer is the model's "re: <message>"; deliveries of
// unavailable (replies.unavailable) are counted apart, and end the wait as
// an answer would, since the service has given up on that message.
func (r *loadReport) collectAnswers(ctx context.Context, sim *wecomsim.Server, samples []sample, phases []ingress, unavailable string) time.Time {
	byContent := make(map[string]int, len(samples))
	first := time.Time{}
	want := 0
	for i, s := range samples {
		if !s.ok {
			continue
		}
		byContent[loadPrefix+s.content] = i
		want++
		if first.IsZero() || s.start.Before(first) {
			first = s.start
		}
	}
	answers := make(map[int]int, want)
	var e2e []time.Duration
	var answeredAt []time.Time
	var last time.Time
	seen := 0
	scan := func() {
		delivered := sim.DeliveredSince(seen)
		for _, d := range delivered {
			i, ok := byContent[d.Content]
			switch {
			case ok:
				answers[i]++
				if answers[i] == 1 {
					e2e = append(e2e, d.At.Sub(samples[i].start))
					answeredAt = append(answeredAt, d.At)
					last = d.At
				}
			case unavailable != "" && d.Content == unavailable:
				r.Unavailable++
			default:
				r.Other++
			}
		}
		seen += len(delivered)
	}
	deadline := time.Now().Add(r.Opts.Drain)
	for {
		scan()
		if len(answers)+r.Unavailable >= want || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		// Polled, not WaitDelivered: that copies every delivery so far on
		// each new one, which costs more than the service at high counts;
		// DeliveredSince copies only the new ones.
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	// Duplicates arrive after the first answer; give them a chance to.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
	scan()
	for _, n := range answers {
		if n > 1 {
			r.Duplicates += n - 1
		}
	}
	r.Answered = len(answers)
	r.Lost = max(0, want-len(answers)-r.Unavailable)
	if r.Answered > 0 && last.After(first) {
		r.AnswerRate = float64(r.Answered) / last.Sub(first).Seconds()
	}
	r.PhaseAnswerRate = make([]float64, len(phases))
	for p, ph := range phases {
		n := 0
		for _, at := range answeredAt {
			if !at.Before(ph.Start) && !at.After(ph.End) {
				n++
			}
		}
		if d := ph.End.Sub(ph.Start); d > 0 {
			r.PhaseAnswerRate[p] = float64(n) / d.Seconds()
		}
	}
	slices.Sort(e2e)
	r.E2E = e2e
	return last
}

// loadChildEnv marks the processes the load command starts: load-baseline
// runs only with it.
const loadChildEnv = "WECOMBOT_LOAD_CHILD"

// runBaseline serves baselineHandler for the first bot of the configuration
// at path on its server.addr until ctx ends: `wecombot load-baseline`, which
// the load command starts as its own process when the service runs as one,
// with the GC settings of serve. It answers 200 to callbacks without storing
// them, so it refuses to run unless started by load, and on anything but a
// loopback address: pointed at a real config by mistake, it would drop
// users' messages.
func runBaseline(ctx context.Context, path string, stderr io.Writer) int {
	if os.Getenv(loadChildEnv) != "1" {
		fmt.Fprintln(stderr, "wecombot load-baseline: started by `wecombot load` only (it acknowledges callbacks without storing them)")
		return 2
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return 1
	}
	if len(cfg.Bots) == 0 {
		fmt.Fprintln(stderr, "wecombot load-baseline: no bot configured")
		return 1
	}
	host, _, err := net.SplitHostPort(cfg.Server.Addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(stderr, "wecombot load-baseline: server.addr %q is not a loopback address\n", cfg.Server.Addr)
		return 1
	}
	tuneGC(os.Getenv)
	b := cfg.Bots[0]
	srv, _, err := serveHandler(baselineHandler(b.Token, b.EncodingAESKey, b.CorpID), cfg.Server.Addr)
	if err != nil {
		fmt.Fprintf(stderr, "wecombot load-baseline: %v\n", err)
		return 1
	}
	<-ctx.Done()
	srv.Close()
	return 0
}

// baselineHandler is the floor the service is measured against: only what
// any callback handler must do (signature check, decrypt, XML parse) with
// silenceper's code, answering 200. Nothing is stored, deduped or answered.
func baselineHandler(token, aesKey, corpID string) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET("/readyz", func(c *gin.Context) { c.Status(http.StatusOK) }) // for startChild
	e.POST("/wecom/:bot/callback", func(c *gin.Context) {
		body, err := io.ReadAll(io.LimitReader(c.Request.Body, 1<<20))
		if err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		var env struct {
			Encrypt string `xml:"Encrypt"`
		}
		if err := xml.Unmarshal(body, &env); err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		if util.Signature(token, c.Query("timestamp"), c.Query("nonce"), env.Encrypt) != c.Query("msg_signature") {
			c.Status(http.StatusForbidden)
			return
		}
		_, plain, err := util.DecryptMsg(corpID, env.Encrypt, aesKey)
		if err != nil {
			c.Status(http.StatusForbidden)
			return
		}
		var msg struct {
			ToUserName, FromUserName, MsgType, Content string
			CreateTime, MsgId, AgentID                 int64
		}
		if err := xml.Unmarshal(plain, &msg); err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		c.Status(http.StatusOK)
	})
	return e
}

// procStatus reads a "kB" field such as VmRSS or VmHWM of process pid (0:
// this process).
func procStatus(pid int, field string) (int64, error) {
	file := "/proc/self/status"
	if pid != 0 {
		file = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("load: %s not in %s", field, file)
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
	fmt.Fprintf(w, "wecombot load: %d users, %s, %s, llm.max_concurrency %s, %d senders, drain %s, %d CPUs\n",
		o.Users, run, model, concurrency, o.Senders, o.Drain, r.NumCPU)
	if r.ServicePID == 0 {
		fmt.Fprintln(w, "everything runs in this one process on loopback: generator, WeCom simulator, fake LLM, service, baseline")
	} else {
		fmt.Fprintf(w, "the service runs as its own process (pid %d, wecombot serve), then the baseline as its own (pid %d, wecombot load-baseline); generator, WeCom simulator and fake LLM in this one; all on loopback\n", r.ServicePID, r.BaselinePID)
	}
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
	if r.ServicePID == 0 {
		fmt.Fprintln(w, "memory (whole load process, kB: service + generator + simulator + fake LLM)")
	} else {
		fmt.Fprintf(w, "memory (the service's own process, kB: /proc/%d/status VmRSS, VmHWM)\n", r.ServicePID)
	}
	idle := "RSS idle before load"
	if r.ServicePID != 0 {
		idle = fmt.Sprintf("RSS idle (ready + %s)", o.Settle)
	}
	fmt.Fprintf(w, "  %-24s %14d   (anonymous %d + file-backed %d)\n", idle, r.IdleRSS, r.IdleAnon, r.IdleFile)
	fmt.Fprintf(w, "  %-24s %14d\n", "peak RSS before load", r.HWMBefore)
	fmt.Fprintf(w, "  %-24s %14d\n", "peak RSS after service", r.HWMAfter)
	fmt.Fprintf(w, "  %-24s %14d   (after the drain)\n", "RSS at the end", r.EndRSS)
	if r.ServicePID != 0 {
		fmt.Fprintf(w, "  %-24s %14d   (generator, simulator, fake LLM: not the service)\n", "load process peak RSS", r.LoadHWM)
	}
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
	if o.CPUProfile != "" {
		fmt.Fprintf(w, "CPU profile of the sending phase (whole process): %s\n", o.CPUProfile)
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
