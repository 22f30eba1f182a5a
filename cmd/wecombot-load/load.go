package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// Load identities: a made-up corp and app that exist only in the simulator.
const (
	loadCorp   = "wwload000000001"
	loadAgent  = 1000003
	loadPrefix = "re: " // the fake LLM answers "re: <message>", so answers match messages by content
	// loadUnavailable is the service's replies.unavailable in a run: a
	// delivery of it is the service giving up on a message, not an answer.
	loadUnavailable = "load: the model is unavailable"
	// loadMaxMessages bounds one run whatever the flags say.
	loadMaxMessages = 1_000_000
	// serviceMaxConcurrency is wecombot's default llm.max_concurrency, for
	// the report (a test holds it to the adapter's): the adapter itself is
	// not linked in, since it would bring the storage and SQLite along.
	serviceMaxConcurrency = 2000
)

// loadOptions configure a run.
type loadOptions struct {
	// Binary is the wecombot executable the service runs from; "" finds
	// one (findWecombot).
	Binary   string
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
	MaxConcurrency int // llm.max_concurrency of the service; 0: its default
	// CPUProfile, when set, is the file the service's CPU profile of the
	// first phase goes to, taken through its server.pprof_addr.
	CPUProfile string
	Senders    int           // callbacks in flight at most
	Drain      time.Duration // how long to wait for answers after the last callback
	Log        io.Writer     // the service's and the baseline's own log (errors only)
	Settle     time.Duration // after /readyz, before the idle RSS is read
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

// runLoad starts the simulator and the fake LLM in this process and the
// service as a child process, drives the service, then the bare baseline
// (a child process too), with the same generator for the same duration.
func runLoad(ctx context.Context, o loadOptions) (*loadReport, error) {
	if o.Soak > 0 {
		o.Duration = o.Soak
	}
	bin, err := findWecombot(o.Binary)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("this executable, which serves the baseline: %w", err)
	}
	env, gc := childEnv(os.Environ())
	r := &loadReport{Opts: o, NumCPU: runtime.NumCPU(), GC: gc, MaxConcurrency: o.MaxConcurrency}
	if r.MaxConcurrency == 0 {
		r.MaxConcurrency = serviceMaxConcurrency
	}
	dir, err := os.MkdirTemp("", "wecombot-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	bot := newLoadBot()
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{bot.simApp()}})
	simSrv, simURL, err := serve(sim.Handler(), "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer simSrv.Close()
	fake := newLoadModel(o)
	llmSrv := httptest.NewServer(fake.Handler())
	defer llmSrv.Close()
	defer fake.Close() // before llmSrv.Close: it ends requests still waiting

	cfg := newServiceConfig(filepath.Join(dir, "load.db"), simURL, llmSrv.URL+"/v1", bot, o)
	if o.CPUProfile != "" {
		if cfg.Server.PprofAddr, err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	children := launcher{dir: dir, env: env, log: o.Log}
	svc, err := children.start(ctx, cfg, bin, "serve")
	if err != nil {
		return nil, err
	}
	defer svc.stop()
	r.ServicePID = svc.pid

	client := loadClient(o.Senders)
	defer client.CloseIdleConnections()
	cb := bot.callback("http://" + svc.addr)
	cb.HTTPClient = client

	if o.Settle > 0 {
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
	stopSampling := func() []reading { return nil }
	if o.Soak > 0 {
		stopSampling = sampleEvery(o.SampleEvery, func() (int64, error) { return procStatus(svc.pid, "VmRSS") })
	}
	stopInFlight := sampleEvery(inFlightEvery, func() (int64, error) { return int64(fake.InFlight()), nil })
	profiled := make(chan error, 1)
	if o.CPUProfile != "" {
		go func() { profiled <- cpuProfile(ctx, cfg.Server.PprofAddr, o.phases()[0].Duration, o.CPUProfile) }()
	} else {
		profiled <- nil
	}
	samples, in := drive(ctx, cb, o.phases(), o)
	if err := <-profiled; err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	r.Soak = stopSampling()
	r.Service = in[0]
	if len(in) > 1 {
		r.Then = &in[1]
	}
	lastAnswer := r.collectAnswers(ctx, sim, samples, in, loadUnavailable)
	r.InFlight = stopInFlight()
	for i, s := range r.InFlight {
		if !lastAnswer.IsZero() && s.At > lastAnswer.Sub(in[0].Start) {
			r.InFlight = r.InFlight[:i+1] // the first sample after the last answer
			break
		}
	}
	r.ModelCalls, r.ModelLimited = fake.Calls(), int(fake.limited.Load())
	r.Stream = fake.streamed.Load()
	r.TokenFetches = sim.TotalTokenFetches()
	r.HWMAfter, _ = procStatus(svc.pid, "VmHWM")
	r.EndRSS, _ = procStatus(svc.pid, "VmRSS")
	r.LoadHWM, _ = procStatus(0, "VmHWM")
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
		fmt.Fprintf(o.Log, "wecombot-load: service shutdown: %v\n", err)
	}
	if o.Soak > 0 {
		return r, ctx.Err() // the baseline's memory is of no interest
	}

	// The floor runs the way the service ran, as its own process: in this
	// one it would skip the cross-process wakeups that every callback to
	// the service pays.
	base, err := children.start(ctx, cfg, self, baselineCommand)
	if err != nil {
		return nil, err
	}
	defer base.stop()
	r.BaselinePID = base.pid
	bcb := bot.callback("http://" + base.addr)
	bcb.HTTPClient = client
	_, bl := drive(ctx, bcb, o.phases()[:1], o)
	r.Baseline = bl[0]
	return r, ctx.Err()
}

// loadBot is the one bot of a run: a made-up corp and app that exist only
// in the simulator, with fresh secrets. Its fields are wecombot's bots[]
// keys.
type loadBot struct {
	Name           string `yaml:"name"`
	CorpID         string `yaml:"corp_id"`
	AgentID        int64  `yaml:"agent_id"`
	Secret         string `yaml:"secret"`
	Token          string `yaml:"token"`
	EncodingAESKey string `yaml:"encoding_aes_key"`
}

func newLoadBot() loadBot {
	return loadBot{Name: "load", CorpID: loadCorp, AgentID: loadAgent,
		Secret: randomHex(16), Token: randomHex(8), EncodingAESKey: wecomsim.NewEncodingAESKey()}
}

// simApp is the simulator's side of bot b: what gettoken checks.
func (b loadBot) simApp() wecomsim.App {
	return wecomsim.App{CorpID: b.CorpID, AgentID: b.AgentID, Secret: b.Secret}
}

// callback is WeCom's door to bot b on the service at base (http://host:port).
func (b loadBot) callback(base string) *wecomsim.Callback {
	return &wecomsim.Callback{
		URL:   strings.TrimRight(base, "/") + "/wecom/" + b.Name + "/callback",
		Token: b.Token, EncodingAESKey: b.EncodingAESKey, CorpID: b.CorpID,
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serve serves h on addr (the simulator's WeCom API, the baseline) until
// the returned server is closed, and returns the server and its base URL.
func serve(h http.Handler, addr string) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
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
