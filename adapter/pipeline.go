package adapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// Inbound is a message of a user to a bot, as any channel delivers it to the
// pipeline: the seam between WeCom's wire formats and the conversation.
type Inbound struct {
	Bot     string
	UserID  string
	MsgType string // text, image, voice, video, file, location, link, event
	Event   string // for MsgType event: subscribe, enter_agent, …
	Content string
	// Images are the message's images, for its channel to download after
	// the message is stored (an image, the images of a mixed message).
	Images     []MediaRef
	DedupeKey  string
	CreateTime int64
}

// Replies are the texts the bot itself says to users: the `replies:`
// section.
type Replies struct {
	Unavailable string `yaml:"unavailable"` // the LLM failed or timed out
	Help        string `yaml:"help"`        // /help
	TextOnly    string `yaml:"text_only"`   // image, voice, file… received
	Welcome     string `yaml:"welcome"`     // subscribe / enter_agent; empty: say nothing
	Reset       string `yaml:"reset"`       // after /reset or /new
	Empty       string `yaml:"empty"`       // a text message without text
	// Interrupted follows the parts of an answer whose stream was cut off
	// by a stop or a crash; empty: Unavailable.
	Interrupted string `yaml:"interrupted"`
	// ImagePrompt is what the model is asked about an image sent without
	// text (llm.vision).
	ImagePrompt string `yaml:"image_prompt"`
	// ImageFailed answers an image that cannot be used: its download
	// failed, it is larger than 10 MB, or it is not a JPEG, PNG, GIF or
	// WebP.
	ImageFailed string `yaml:"image_failed"`
	// Continued ends an AI bot's stream that WeCom stops showing before
	// the answer is done (6 minutes); the whole answer follows in a
	// message of its own. Empty: the stream ends without a note.
	Continued string `yaml:"continued"`
}

// LLMConfig is the pipeline's part of the `llm:` section: what it sends the
// model and how it calls it. Where the model is and how long a call may
// take are the client's part (llm.Config).
type LLMConfig struct {
	// SystemPrompt opens every conversation; empty: none.
	SystemPrompt string `yaml:"system_prompt"`
	// HistoryTurns is how many user+assistant pairs of the conversation
	// are sent before the new message.
	HistoryTurns int `yaml:"history_turns"`
	// Retries is how many times a failed call is retried before the user
	// gets Replies.Unavailable. Calls refused for the provider's rate limit
	// do not count: they are retried until PipelineConfig.RateLimitWait.
	Retries int `yaml:"retries"`
	// Stream asks the LLM for a streamed answer, when it can stream, and
	// sends its paragraphs as they complete (see streamSplitter).
	Stream bool `yaml:"stream"`
	// MaxConcurrency is how many users are answered at once, and so how
	// many calls to the model may be in flight; the provider's rate limits
	// lower the calls for a while (callLimiter). Default
	// DefaultMaxConcurrency.
	MaxConcurrency int `yaml:"max_concurrency"`
	// Vision says the model accepts images: a user's image is downloaded
	// and sent to it as an image_url content part; false:
	// Replies.TextOnly.
	Vision bool `yaml:"vision"`
}

// PipelineConfig configures the conversation pipeline: the `llm:` keys and
// the replies it reads as they are in the configuration, and the values
// that cmd works out of the configuration and the deployment.
type PipelineConfig struct {
	LLM     LLMConfig
	Replies Replies
	// Model names the model the pipeline calls, as the panel shows it
	// (llm.model); Host and KeySet say where it is and whether a key is
	// set (Endpoint). They, LLM, RateLimitWait and the completer given to
	// NewPipeline are the pipeline's own model: every bot's but those in
	// Bots.
	Model  string
	Host   string
	KeySet bool
	// Bots are the bots' own model settings (`bots[].llm`), by name; a
	// bot not there uses the pipeline's own.
	Bots map[string]BotModel
	// RateLimitWait is how old a message may get while its calls are
	// refused for the provider's rate limit before the user gets
	// Replies.Unavailable (llm.timeout). Default one minute.
	RateLimitWait time.Duration
	// Lease is how long this instance's claim on a user's messages lasts
	// without renewal (pipeline.lease): after a crash, how long until
	// another instance (or the next start) takes its users over. Default
	// 15s.
	Lease time.Duration
	// Owner names this instance in the user leases; empty: host, pid and
	// a random suffix.
	Owner string
	// Exclusive says no other instance uses the database (SQLite): leases
	// found at start are a previous run's and are dropped at once, and no
	// lease is taken: this process's own bookkeeping (one worker per user)
	// is enough, and two writes (two fsyncs) per answer are saved. For the
	// same reason a user's pending messages are read several at once
	// (pendingBatch) and not marked answering one by one (handle).
	Exclusive bool
}

// DefaultMaxConcurrency is the default of LLMConfig.MaxConcurrency:
// enough users at once for 50 messages a second to a model that takes 30 s
// (1,500 in flight), within the service's memory target (BENCHMARKS.md).
const DefaultMaxConcurrency = 2000

// MessageStore is what the pipeline needs of storage.
type MessageStore interface {
	InsertMessage(ctx context.Context, m *storage.Message) (bool, error)
	StartAnswer(ctx context.Context, id int64) error
	SetMessageState(ctx context.Context, id int64, state, reason string) error
	ClaimUser(ctx context.Context, u storage.UserRef, owner string, until time.Time) (bool, error)
	ReleaseUser(ctx context.Context, u storage.UserRef, owner string) (bool, error)
	DropUserLease(ctx context.Context, u storage.UserRef, owner string) error
	DropLeases(ctx context.Context, keep string) error
	PendingMessages(ctx context.Context, u storage.UserRef, limit int) ([]storage.Message, error)
	UnclaimedUsers(ctx context.Context, now time.Time, after int64, limit int) (users []storage.UserRef, next int64, err error)
	SaveAnswer(ctx context.Context, a storage.Answer) error
	SaveMedia(ctx context.Context, m storage.MessageMedia) error
	MessageMedia(ctx context.Context, id int64, withData bool) ([]storage.MessageMedia, error)
	AppendParts(ctx context.Context, id int64, bot, user string, parts []string) error
	History(ctx context.Context, bot, user string, pairs int) ([]storage.Turn, error)
}

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
	outbox interface{ Notify() }
	clock  clockwork.Clock
	log    *slog.Logger
	// def is the pipeline's own model settings, models each bot's that has
	// its own; endpoints are the distinct models they call, each with the
	// limiter that bounds its calls in flight, following the provider's
	// rate limits, and its health.
	def       *botModel
	models    map[string]*botModel
	endpoints []*endpoint
	metrics   *Metrics
	// repliers are the channels of the bots that do not reply with parts
	// (UseReplier); parts replies for the others.
	repliers map[string]Replier
	parts    *partsReplier
	// media are the channels that download the images of each bot's
	// messages (UseMedia); a bot without one gets Replies.TextOnly.
	media map[string]MediaFetcher
	// storing holds a token for each user whose answer is doing anything
	// but waiting on the model (storage, mostly); see storageSlots.
	storing chan struct{}
	// flood paces the starts of answers while messages flood in.
	flood *floodGuard

	workCtx    context.Context
	cancelWork context.CancelFunc
	wg         sync.WaitGroup

	claims     MessageClaims // nil: the database's unique key dedupes alone
	stopSweep  context.CancelFunc
	background sync.WaitGroup // the sweeper

	mu     sync.Mutex
	again  map[userKey]bool // woken while being served: look again before leaving
	active map[userKey]bool // queued or being served; ready and running are the endpoints'
	closed bool
}

// NewPipeline returns a pipeline; Start sets it working.
func NewPipeline(cfg PipelineConfig, store MessageStore, completer Completer, outbox interface{ Notify() }, clock clockwork.Clock, log *slog.Logger) *Pipeline {
	if cfg.LLM.MaxConcurrency <= 0 {
		cfg.LLM.MaxConcurrency = DefaultMaxConcurrency
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
	p := &Pipeline{
		cfg: cfg, store: store, outbox: outbox, clock: clock, log: log,
		models: map[string]*botModel{}, metrics: NewMetrics(nil),
		repliers: map[string]Replier{}, media: map[string]MediaFetcher{},
		parts:   &partsReplier{store: store, outbox: outbox, now: clock.Now},
		storing: make(chan struct{}, storageSlots), flood: newFloodGuard(clock, log),
		workCtx: ctx, cancelWork: cancel,
		again: map[userKey]bool{}, active: map[userKey]bool{},
	}
	own := Endpoint{
		Model: cfg.Model, Host: cfg.Host, KeySet: cfg.KeySet, LLM: completer,
		MaxConcurrency: cfg.LLM.MaxConcurrency, RateLimitWait: cfg.RateLimitWait,
	}
	p.def = &botModel{cfg: cfg.LLM, ep: p.addEndpoint(own)}
	// In the order of the bots' names, so that the endpoints' numbers do
	// not change from one start to the next.
	shared := map[*Endpoint]*endpoint{}
	for _, bot := range slices.Sorted(maps.Keys(cfg.Bots)) {
		bm := cfg.Bots[bot]
		m := &botModel{cfg: bm.LLM, ep: p.def.ep}
		if e := bm.Endpoint; e != nil {
			if shared[e] == nil {
				shared[e] = p.addEndpoint(*e)
			}
			m.ep = shared[e]
		}
		m.cfg.MaxConcurrency = m.ep.MaxConcurrency
		p.models[bot] = m
	}
	return p
}

// addEndpoint adds e to the endpoints the pipeline calls.
func (p *Pipeline) addEndpoint(e Endpoint) *endpoint {
	ep := newEndpoint(e, len(p.endpoints)+1, p.clock, p.log)
	p.endpoints = append(p.endpoints, ep)
	return ep
}

// UseReplier has bot's answers shown by r instead of parts. Call it before
// Start.
func (p *Pipeline) UseReplier(bot string, r Replier) { p.repliers[bot] = r }

// instanceName is a lease owner unique to this process.
func instanceName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Accept stores in (deduplicated on its key, so a retried callback, even
// after a restart, is dropped) and wakes a worker for its user; it reports
// whether in was new. It returns once the message is durable: the caller may
// acknowledge it. With claims (UseClaims), in is claimed in Redis first.
func (p *Pipeline) Accept(ctx context.Context, in Inbound) (bool, error) {
	m := &storage.Message{
		Bot: in.Bot, DedupeKey: in.DedupeKey, UserID: in.UserID, MsgType: in.MsgType,
		Event: in.Event, Content: in.Content, Media: encodeMedia(in.Images), CreateTime: in.CreateTime, ReceivedAt: p.clock.Now(),
	}
	if p.claims != nil {
		return p.acceptClaimed(ctx, m)
	}
	return p.insert(ctx, m)
}

// insert stores m and wakes a worker for its user when it is new.
func (p *Pipeline) insert(ctx context.Context, m *storage.Message) (bool, error) {
	isNew, err := p.store.InsertMessage(ctx, m)
	if err != nil || !isNew {
		return false, err
	}
	p.metrics.message(m.Bot, resultReceived)
	p.flood.arrived()
	// Stored before the user is claimed: an owner elsewhere that releases
	// the user checks for it in the same statement (storage.ReleaseUser).
	p.enqueue(userKey{m.Bot, m.UserID})
	return true, nil
}

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

// sweepPage is how many unclaimed pending messages a sweep reads at a time:
// each read holds SQLite's one connection for a moment only, so the ingest
// goes on between them.
const sweepPage = 256

// sweep queues the users with pending messages and no live lease, reading
// them a page at a time; it returns how many it queued (a user with several
// pages counts once per page).
func (p *Pipeline) sweep(ctx context.Context) (int, error) {
	n := 0
	var after int64
	for {
		users, next, err := p.store.UnclaimedUsers(ctx, p.clock.Now(), after, sweepPage)
		if err != nil {
			return n, err
		}
		for _, u := range users {
			p.enqueue(userKey{u.Bot, u.UserID})
		}
		n += len(users)
		if next == 0 {
			return n, nil
		}
		after = next
	}
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
