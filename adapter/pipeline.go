package adapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// Inbound is a message of a user to a bot, as any channel delivers it to the
// pipeline: the seam between WeCom's wire formats and the conversation.
type Inbound struct {
	Bot        string
	UserID     string
	MsgType    string // text, image, voice, video, file, location, link, event
	Event      string // for MsgType event: subscribe, enter_agent, …
	Content    string
	DedupeKey  string
	CreateTime int64
}

// Replies are the texts the bot itself says to users.
type Replies struct {
	Unavailable string // the LLM failed or timed out
	Help        string // /help
	TextOnly    string // image, voice, file… received
	Welcome     string // subscribe / enter_agent; empty: say nothing
	Reset       string // after /reset or /new
	Empty       string // a text message without text
	// Interrupted follows the parts of an answer whose stream was cut off
	// by a stop or a crash; empty: Unavailable.
	Interrupted string
}

// PipelineConfig configures the conversation pipeline.
type PipelineConfig struct {
	// MaxConcurrency is how many users are answered at once, and so how
	// many calls to the model may be in flight (llm.max_concurrency); the
	// provider's rate limits lower the calls for a while (callLimiter).
	// Default DefaultMaxConcurrency.
	MaxConcurrency int
	SystemPrompt   string
	HistoryTurns   int
	// LLMRetries is how many times a failed LLM call is retried before the
	// user gets Replies.Unavailable. Calls refused for the provider's rate
	// limit do not count: they are retried until RateLimitWait.
	LLMRetries int
	// RateLimitWait is how old a message may get while its calls are
	// refused for the provider's rate limit before the user gets
	// Replies.Unavailable (llm.timeout). Default one minute.
	RateLimitWait time.Duration
	// Stream asks the LLM for a streamed answer, when it can stream, and
	// sends its paragraphs as they complete (see streamSplitter).
	Stream  bool
	Replies Replies
	// Owner names this instance in the user leases; empty: host, pid and
	// a random suffix.
	Owner string
	// Lease is how long this instance's claim on a user's messages lasts
	// without renewal: after a crash, how long until another instance (or
	// the next start) takes its users over. Default 15s.
	Lease time.Duration
	// Exclusive says no other instance uses the database (SQLite): leases
	// found at start are a previous run's and are dropped at once, and no
	// lease is taken: this process's own bookkeeping (one worker per user)
	// is enough, and two writes (two fsyncs) per answer are saved.
	Exclusive bool
}

// DefaultMaxConcurrency is the default of PipelineConfig.MaxConcurrency:
// enough users at once for 50 messages a second to a model that takes 30 s
// (1,500 in flight), within the service's memory target (BENCHMARKS.md).
const DefaultMaxConcurrency = 2000

// storageSlots is how many users' answers do their storage work at once,
// while up to MaxConcurrency wait on the model. With every waiting user
// let through, their statements took turns at SQLite's one connection one
// by one: all the answers of a burst finished together, seconds later
// (5 answers/s while 4,000 callbacks arrived), and they crowded the ingest.
// Targets: answers keep pace during a burst or a flood; ack p99 < 50 ms.
const storageSlots = 16

// MessageStore is what the pipeline needs of storage.
type MessageStore interface {
	InsertMessage(ctx context.Context, m *storage.Message) (bool, error)
	StartAnswer(ctx context.Context, id int64) error
	SetMessageState(ctx context.Context, id int64, state, reason string) error
	ClaimUser(ctx context.Context, u storage.UserRef, owner string, until time.Time) (bool, error)
	ReleaseUser(ctx context.Context, u storage.UserRef, owner string) (bool, error)
	DropUserLease(ctx context.Context, u storage.UserRef, owner string) error
	DropLeases(ctx context.Context, keep string) error
	NextPending(ctx context.Context, u storage.UserRef) (storage.Message, bool, error)
	UnclaimedUsers(ctx context.Context, now time.Time, limit int) ([]storage.UserRef, error)
	SaveAnswer(ctx context.Context, a storage.Answer) error
	AppendParts(ctx context.Context, id int64, bot, user string, parts []string) error
	History(ctx context.Context, bot, user string, pairs int) ([]storage.Turn, error)
}

// MessageClaims dedupes inbound messages across instances that do not share
// a database (storage.Redis).
type MessageClaims interface {
	ClaimMessage(ctx context.Context, key string, pendingTTL time.Duration) (claimed, done bool, err error)
	ConfirmMessage(ctx context.Context, key string, keep time.Duration) error
	Unclaim(ctx context.Context, key string) error
}

// ErrInFlight is Accept's answer to a retry of a message another instance
// is storing right now: the callback answers 500 and WeCom retries later.
var ErrInFlight = errors.New("adapter: another instance is storing this message; WeCom will retry it")

// How long a message claim waits for its instance to store the message
// (longer than a callback may take), and how long a stored message's claim
// is kept (WeCom's retries come within seconds).
const (
	claimPendingTTL = 10 * time.Second
	claimKeep       = 24 * time.Hour
)

// Completer answers a conversation (llm.Client).
type Completer interface {
	Complete(ctx context.Context, msgs []llm.Message) (string, error)
}

// StreamCompleter is a Completer that can also answer piece by piece
// (llm.Client, llm.Echo).
type StreamCompleter interface {
	Stream(ctx context.Context, msgs []llm.Message, onDelta func(string) error) (string, error)
}

type userKey struct{ bot, user string }

// Pipeline turns accepted messages into stored answers: one message of a user
// at a time, in arrival order, different users concurrently (up to
// MaxConcurrency, each mostly waiting on the model). It never sends anything
// itself: answers go to the outbox.
//
// Which messages to answer comes from the database, not from memory: a
// worker claims a user (a lease in the database, renewed while it works),
// answers the user's pending messages oldest first, and releases the user
// when none is left. So several instances on one database answer each user
// in order, whichever instance WeCom delivered a message to, and the users
// of an instance that died are taken over when its leases expire (the
// sweeper finds them). Accept only wakes a worker early.
type Pipeline struct {
	cfg    PipelineConfig
	store  MessageStore
	llm    Completer
	outbox interface{ Notify() }
	clock  clockwork.Clock
	log    *slog.Logger
	// limiter bounds the calls to the model in flight, following the
	// provider's rate limits.
	limiter *callLimiter
	metrics *Metrics
	// storing holds a token for each user whose answer is doing anything
	// but waiting on the model (storage, mostly); see storageSlots.
	storing chan struct{}

	workCtx    context.Context
	cancelWork context.CancelFunc
	wg         sync.WaitGroup

	claims     MessageClaims // nil: the database's unique key dedupes alone
	stopSweep  context.CancelFunc
	background sync.WaitGroup // the sweeper

	mu      sync.Mutex
	again   map[userKey]bool // woken while being served: look again before leaving
	active  map[userKey]bool // queued or being served
	ready   []userKey
	running int
	closed  bool
}

// NewPipeline returns a pipeline; Start sets it working.
func NewPipeline(cfg PipelineConfig, store MessageStore, completer Completer, outbox interface{ Notify() }, clock clockwork.Clock, log *slog.Logger) *Pipeline {
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	if cfg.RateLimitWait <= 0 {
		cfg.RateLimitWait = time.Minute
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 15 * time.Second
	}
	if cfg.Owner == "" {
		cfg.Owner = instanceName()
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pipeline{
		cfg: cfg, store: store, llm: completer, outbox: outbox, clock: clock, log: log,
		limiter: newCallLimiter(cfg.MaxConcurrency, clock, log), metrics: NewMetrics(nil),
		storing: make(chan struct{}, storageSlots),
		workCtx: ctx, cancelWork: cancel,
		again: map[userKey]bool{}, active: map[userKey]bool{},
	}
}

// instanceName is a lease owner unique to this process.
func instanceName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Accept stores in (deduplicated on its key, so a retried callback, even
// after a restart, is dropped) and wakes a worker for its user. It reports whether in was new.
// It returns once the message is durable: the caller may acknowledge it.
func (p *Pipeline) Accept(ctx context.Context, in Inbound) (bool, error) {
	m := &storage.Message{
		Bot: in.Bot, DedupeKey: in.DedupeKey, UserID: in.UserID, MsgType: in.MsgType,
		Event: in.Event, Content: in.Content, CreateTime: in.CreateTime, ReceivedAt: p.clock.Now(),
	}
	if p.claims != nil {
		key := "wecombot:msg:" + in.Bot + ":" + in.DedupeKey
		claimed, done, err := p.claims.ClaimMessage(ctx, key, claimPendingTTL)
		switch {
		case err != nil:
			p.log.Warn("Redis dedupe unavailable; only this instance's database dedupes", "err", err)
		case done:
			return false, nil
		case !claimed:
			return false, ErrInFlight
		default:
			isNew, err := p.insert(ctx, m)
			// Stored (or known): later retries are duplicates. Not stored:
			// the claim is given back so that WeCom's retry is not dropped.
			if err == nil {
				err2 := p.claims.ConfirmMessage(ctx, key, claimKeep)
				if err2 != nil {
					p.log.Warn("cannot confirm the Redis dedupe claim; it expires", "err", err2)
				}
			} else if err2 := p.claims.Unclaim(context.WithoutCancel(ctx), key); err2 != nil {
				p.log.Warn("cannot release the Redis dedupe claim; it expires", "err", err2)
			}
			return isNew, err
		}
	}
	return p.insert(ctx, m)
}

// insert stores m and wakes a worker for its user when it is new.
func (p *Pipeline) insert(ctx context.Context, m *storage.Message) (bool, error) {
	isNew, err := p.store.InsertMessage(ctx, m)
	if err != nil || !isNew {
		return false, err
	}
	// Stored before the user is claimed: an owner elsewhere that releases
	// the user checks for it in the same statement (storage.ReleaseUser).
	p.enqueue(userKey{m.Bot, m.UserID})
	return true, nil
}

// UseClaims makes Accept claim every message in c before storing it: the
// dedupe across instances with a database each.
func (p *Pipeline) UseClaims(c MessageClaims) { p.claims = c }

// Start resumes the messages a previous run (of this or a dead instance)
// accepted but did not answer, and keeps looking for such work every third
// of a lease until Shutdown.
func (p *Pipeline) Start(ctx context.Context) error {
	if p.cfg.Exclusive {
		if err := p.store.DropLeases(ctx, p.cfg.Owner); err != nil {
			return err
		}
	}
	n, err := p.sweep(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		p.log.Info("resuming unanswered messages", "users", n)
	}
	sweepCtx, stop := context.WithCancel(p.workCtx)
	p.stopSweep = stop
	p.background.Go(func() { p.sweeper(sweepCtx) })
	return nil
}

// sweeper looks for users whose messages nobody answers, until ctx ends.
func (p *Pipeline) sweeper(ctx context.Context) {
	every(ctx, p.clock, max(p.cfg.Lease/3, 100*time.Millisecond), func() {
		if n, err := p.sweep(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("cannot look for unanswered messages", "err", err)
		} else if n > 0 {
			p.log.Info("taking over unanswered messages", "users", n)
		}
	})
}

// every calls fn every d of clock until ctx ends.
func every(ctx context.Context, clock clockwork.Clock, d time.Duration, fn func()) {
	t := clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			fn()
		}
	}
}

// sweep queues the users with pending messages and no live lease.
func (p *Pipeline) sweep(ctx context.Context) (int, error) {
	users, err := p.store.UnclaimedUsers(ctx, p.clock.Now(), 1000)
	if err != nil {
		return 0, err
	}
	for _, u := range users {
		p.enqueue(userKey{u.Bot, u.UserID})
	}
	return len(users), nil
}

// Shutdown stops taking queued messages and waits for the ones in progress
// until ctx ends, then cancels them. What is left stays stored, its users'
// leases dropped: another instance, or the next Start, resumes it.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.stopSweep != nil {
		p.stopSweep()
		p.background.Wait()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.cancelWork()
		return nil
	case <-ctx.Done():
		p.cancelWork()
		<-done
		return ctx.Err()
	}
}

// enqueue wakes a worker for user k.
func (p *Pipeline) enqueue(k userKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return // stored; another instance or the next start resumes it
	}
	if p.active[k] {
		p.again[k] = true
		return
	}
	p.active[k] = true
	p.ready = append(p.ready, k)
	p.dispatchLocked()
}

func (p *Pipeline) dispatchLocked() {
	for !p.closed && p.running < p.cfg.MaxConcurrency && len(p.ready) > 0 {
		k := p.ready[0]
		p.ready = p.ready[1:]
		p.running++
		p.wg.Add(1)
		go p.serve(k)
	}
}

// serve answers the pending messages of user k, looking again if k was
// woken meanwhile.
func (p *Pipeline) serve(k userKey) {
	defer p.wg.Done()
	for {
		p.storing <- struct{}{}
		p.serveUser(k)
		<-p.storing
		p.mu.Lock()
		if p.again[k] && !p.closed {
			delete(p.again, k)
			p.mu.Unlock()
			continue
		}
		delete(p.again, k)
		delete(p.active, k)
		p.running--
		p.dispatchLocked()
		p.mu.Unlock()
		return
	}
}

// serveUser claims user k and answers its pending messages in order until
// none is left, the lease is lost, or the pipeline stops. On an exclusive
// database no lease is taken: a message accepted meanwhile wakes k again
// (enqueue), so none is missed.
func (p *Pipeline) serveUser(k userKey) {
	u := storage.UserRef{Bot: k.bot, UserID: k.user}
	log := p.log.With("bot", k.bot, "user", k.user)
	ctx := p.workCtx
	leased := !p.cfg.Exclusive
	drop := func() {}
	if leased {
		claimed, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, p.clock.Now().Add(p.cfg.Lease))
		if err != nil {
			if ctx.Err() == nil {
				log.Error("cannot claim user; the sweeper retries", "err", err)
			}
			return
		}
		if !claimed {
			return // another instance answers this user, this message included
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		renewed := make(chan struct{})
		go p.renew(ctx, cancel, u, log, renewed)
		defer func() { cancel(); <-renewed }()
		drop = func() { p.dropLease(u, log) }
	}

	var last int64
	for {
		p.mu.Lock()
		closed := p.closed
		delete(p.again, k)
		p.mu.Unlock()
		if closed || ctx.Err() != nil {
			drop()
			return
		}
		m, found, err := p.store.NextPending(ctx, u)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("cannot read pending messages; the sweeper retries", "err", err)
			}
			drop()
			return
		}
		if !found {
			if !leased {
				return
			}
			released, err := p.store.ReleaseUser(ctx, u, p.cfg.Owner)
			if err != nil || released {
				if err != nil {
					drop()
				}
				return
			}
			// A message arrived since NextPending, or the lease is gone.
			if ok, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, p.clock.Now().Add(p.cfg.Lease)); err != nil || !ok {
				return
			}
			continue
		}
		if m.ID == last {
			// Answered without leaving the pending state: stop rather
			// than loop; the sweeper tries again later.
			log.Error("message still pending after its answer; retrying later", "message", m.ID)
			drop()
			return
		}
		last = m.ID
		if !p.handle(ctx, m) {
			drop()
			return
		}
	}
}

// renew keeps the lease on u until ctx ends. When the lease is lost (this
// instance stalled past it, and another took over) or cannot be renewed for
// a whole lease, the work on u is cancelled: someone else may be doing it.
func (p *Pipeline) renew(ctx context.Context, cancel context.CancelFunc, u storage.UserRef, log *slog.Logger, done chan struct{}) {
	defer close(done)
	t := p.clock.NewTicker(max(p.cfg.Lease/3, 10*time.Millisecond))
	defer t.Stop()
	lastOK := p.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		now := p.clock.Now()
		ok, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, now.Add(p.cfg.Lease))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && now.Sub(lastOK) < p.cfg.Lease:
			log.Warn("cannot renew the user lease", "err", err)
		case err != nil || !ok:
			log.Warn("user lease lost; stopping work on this user", "err", err)
			cancel()
			return
		default:
			lastOK = now
		}
	}
}

// dropLease gives up the lease on u so that its pending messages are taken
// over at once rather than when the lease expires.
func (p *Pipeline) dropLease(u storage.UserRef, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.workCtx), 5*time.Second)
	defer cancel()
	if err := p.store.DropUserLease(ctx, u, p.cfg.Owner); err != nil {
		log.Warn("cannot drop the user lease; it expires by itself", "err", err)
	}
}

// handle answers one message and reports whether it is done with it. Errors
// of storage leave the message as it is, to be resumed later; nothing the
// user sees carries an error.
func (p *Pipeline) handle(ctx context.Context, m storage.Message) bool {
	log := p.log.With("bot", m.Bot, "user", m.UserID, "message", m.ID)
	switch m.State {
	case storage.MessageReceived, storage.MessageAnswering:
	case storage.MessageStreaming:
		// Resumed after a stop or crash in the middle of a streamed answer:
		// its first parts are out, the rest is gone with the process. The
		// user is told, rather than getting the answer again from the top.
		return p.interrupted(ctx, log, m)
	default:
		return true
	}
	if err := p.store.StartAnswer(ctx, m.ID); err != nil {
		log.Error("cannot start answer", "err", err)
		return false
	}
	a, failure := p.answer(ctx, log, m)
	if ctx.Err() != nil {
		return false // stopping or the lease lost: the message stays pending
	}
	a.Failure = failure
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	if len(a.Parts) > 0 {
		p.outbox.Notify()
	}
	return true
}

// interrupted ends m, whose streamed answer was cut off, with a notice
// after the parts that were stored.
func (p *Pipeline) interrupted(ctx context.Context, log *slog.Logger, m storage.Message) bool {
	notice := p.cfg.Replies.Interrupted
	if notice == "" {
		notice = p.cfg.Replies.Unavailable
	}
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID, Failure: "interrupted: the service stopped while the answer was streaming"}
	if notice != "" {
		a.Parts = Split(notice, maxPartBytes)
	}
	log.Warn("streamed answer was interrupted; the user is told")
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	p.outbox.Notify()
	return true
}

// answer decides what to say to m. failure, when set, is why the user gets
// a failure notice instead of an answer.
func (p *Pipeline) answer(ctx context.Context, log *slog.Logger, m storage.Message) (a storage.Answer, failure string) {
	a = storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	say := func(text string) storage.Answer {
		if text != "" {
			a.Parts = Split(text, maxPartBytes)
		}
		return a
	}
	switch m.MsgType {
	case "event":
		if m.Event == "subscribe" || m.Event == "enter_agent" {
			return say(p.cfg.Replies.Welcome), ""
		}
		return a, ""
	case "text":
	default:
		return say(p.cfg.Replies.TextOnly), ""
	}
	text := strings.TrimSpace(m.Content)
	switch strings.ToLower(text) {
	case "":
		return say(p.cfg.Replies.Empty), ""
	case "/reset", "/new":
		a.ResetConversation = true
		return say(p.cfg.Replies.Reset), ""
	case "/help":
		return say(p.cfg.Replies.Help), ""
	}
	if sc, ok := p.llm.(StreamCompleter); ok && p.cfg.Stream {
		return p.stream(ctx, log, m, text, sc)
	}
	answer, err := p.complete(ctx, log, m, text)
	if err != nil {
		log.Warn("LLM failed", "err", err)
		return say(p.cfg.Replies.Unavailable), "llm: " + err.Error()
	}
	a.UserTurn, a.AssistantTurn = text, answer
	return say(answer), ""
}

// conversation is what the LLM is asked: the system prompt, the history and
// the new text.
func (p *Pipeline) conversation(ctx context.Context, m storage.Message, text string) ([]llm.Message, error) {
	history, err := p.store.History(ctx, m.Bot, m.UserID, p.cfg.HistoryTurns)
	if err != nil {
		return nil, err
	}
	msgs := make([]llm.Message, 0, len(history)+2)
	if p.cfg.SystemPrompt != "" {
		msgs = append(msgs, llm.Message{Role: llm.RoleSystem, Content: p.cfg.SystemPrompt})
	}
	for _, t := range history {
		msgs = append(msgs, llm.Message{Role: t.Role, Content: t.Content})
	}
	return append(msgs, llm.Message{Role: llm.RoleUser, Content: text}), nil
}

// complete asks the LLM with the conversation so far.
func (p *Pipeline) complete(ctx context.Context, log *slog.Logger, m storage.Message, text string) (string, error) {
	msgs, err := p.conversation(ctx, m, text)
	if err != nil {
		return "", err
	}
	var answer string
	err = p.ask(ctx, log, m, func() (bool, error) {
		answer, err = p.llm.Complete(ctx, msgs)
		return true, err
	})
	return answer, err
}

// ask makes the call try to the model for m, each attempt within the
// limiter, until it succeeds or it is time to give up:
//   - refused for the provider's rate limit: tried again when the limiter
//     lets calls through, while m is younger than RateLimitWait;
//   - a configuration error (bad key, unknown model): not retried, since
//     every retry would fail the same way; the log says what to fix;
//   - any other failure: retried LLMRetries times, pausing as
//     llmRetryBackOff says (1 s, 2 s…);
//   - try says not to retry (a stream that already sent parts): not.
func (p *Pipeline) ask(ctx context.Context, log *slog.Logger, m storage.Message, try func() (retryable bool, err error)) error {
	// The storage slot is given up while the calls, their retries and
	// their pauses wait on the model.
	<-p.storing
	defer func() { p.storing <- struct{}{} }()
	pauses := llmRetryBackOff()
	failures := 0
	for {
		permit, err := p.limiter.acquire(ctx)
		if err != nil {
			return err
		}
		retryable, err := try()
		p.limiter.release(permit, err)
		p.metrics.llmRequest(m.Bot, err)
		if err == nil {
			return nil
		}
		if !retryable || errors.Is(err, llm.ErrEmpty) || ctx.Err() != nil {
			return err
		}
		switch llm.KindOf(err) {
		case llm.KindConfig:
			log.Error("the model refused the call; not retried", "err", err, "hint", llm.Hint(err))
			return err
		case llm.KindRateLimited:
			if p.clock.Since(m.ReceivedAt) < p.cfg.RateLimitWait {
				continue // the limiter holds the call back
			}
			return err
		}
		if failures >= p.cfg.LLMRetries {
			return err
		}
		failures++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.clock.After(pauses.NextBackOff()):
		}
	}
}

// stream answers m with a streamed completion: parts go to the outbox as
// the splitter hands them out, the rest and the conversation turns with
// SaveAnswer. A failed stream is retried only while nothing was sent;
// afterwards the user gets the parts sent so far and the Unavailable notice.
func (p *Pipeline) stream(ctx context.Context, log *slog.Logger, m storage.Message, text string, sc StreamCompleter) (storage.Answer, string) {
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	notice := func(err error) (storage.Answer, string) {
		log.Warn("LLM failed", "err", err)
		if p.cfg.Replies.Unavailable != "" {
			a.Parts = Split(p.cfg.Replies.Unavailable, maxPartBytes)
		}
		return a, "llm: " + err.Error()
	}
	msgs, err := p.conversation(ctx, m, text)
	if err != nil {
		return notice(err)
	}
	var sp *streamSplitter
	var stored error // set when storing streamed parts failed
	err = p.ask(ctx, log, m, func() (bool, error) {
		sp = newStreamSplitter(maxPartBytes)
		_, err := sc.Stream(ctx, msgs, func(delta string) error {
			parts := sp.add(delta, p.clock.Now())
			if len(parts) == 0 {
				return nil
			}
			if err := p.store.AppendParts(ctx, m.ID, m.Bot, m.UserID, parts); err != nil {
				stored = err
				return err
			}
			p.outbox.Notify()
			return nil
		})
		return !sp.started(), err
	})
	switch {
	case stored != nil && errors.Is(stored, storage.ErrNotFound):
		// Delivery of the first parts failed for good meanwhile (the
		// message is failed): nothing more is sent.
		return a, "streamed answer abandoned: its first parts could not be delivered"
	case stored != nil:
		return notice(stored)
	case err != nil:
		return notice(err)
	}
	a.UserTurn, a.AssistantTurn = text, sp.answer()
	a.Parts = sp.finish()
	return a, ""
}
