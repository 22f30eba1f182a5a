package adapter

import (
	"context"
	"errors"
	"log/slog"
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
	Workers      int // users served at once
	SystemPrompt string
	HistoryTurns int
	// LLMRetries is how many times a failed LLM call is retried before the
	// user gets Replies.Unavailable.
	LLMRetries int
	// Stream asks the LLM for a streamed answer, when it can stream, and
	// sends its paragraphs as they complete (see streamSplitter).
	Stream  bool
	Replies Replies
}

// MessageStore is what the pipeline needs of storage.
type MessageStore interface {
	InsertMessage(ctx context.Context, m *storage.Message) (bool, error)
	GetMessage(ctx context.Context, id int64) (storage.Message, error)
	StartAnswer(ctx context.Context, id int64) error
	SetMessageState(ctx context.Context, id int64, state, reason string) error
	UnansweredMessages(ctx context.Context) ([]storage.Message, error)
	SaveAnswer(ctx context.Context, a storage.Answer) error
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
// at a time, in arrival order, different users concurrently with a bounded
// number of workers. It never sends anything itself: answers go to the outbox.
type Pipeline struct {
	cfg    PipelineConfig
	store  MessageStore
	llm    Completer
	outbox interface{ Notify() }
	clock  clockwork.Clock
	log    *slog.Logger

	workCtx    context.Context
	cancelWork context.CancelFunc
	wg         sync.WaitGroup

	mu      sync.Mutex
	queues  map[userKey][]int64
	active  map[userKey]bool
	ready   []userKey
	running int
	closed  bool
}

// NewPipeline returns a pipeline; Start sets it working.
func NewPipeline(cfg PipelineConfig, store MessageStore, completer Completer, outbox interface{ Notify() }, clock clockwork.Clock, log *slog.Logger) *Pipeline {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pipeline{
		cfg: cfg, store: store, llm: completer, outbox: outbox, clock: clock, log: log,
		workCtx: ctx, cancelWork: cancel,
		queues: map[userKey][]int64{}, active: map[userKey]bool{},
	}
}

// Accept stores in (deduplicated on its key, so a retried callback, even
// after a restart, is dropped) and queues it. It reports whether in was new.
// It returns once the message is durable: the caller may acknowledge it.
func (p *Pipeline) Accept(ctx context.Context, in Inbound) (bool, error) {
	m := &storage.Message{
		Bot: in.Bot, DedupeKey: in.DedupeKey, UserID: in.UserID, MsgType: in.MsgType,
		Event: in.Event, Content: in.Content, CreateTime: in.CreateTime, ReceivedAt: p.clock.Now(),
	}
	isNew, err := p.store.InsertMessage(ctx, m)
	if err != nil || !isNew {
		return false, err
	}
	p.enqueue(userKey{in.Bot, in.UserID}, m.ID)
	return true, nil
}

// Start resumes the messages a previous run accepted but did not answer.
func (p *Pipeline) Start(ctx context.Context) error {
	msgs, err := p.store.UnansweredMessages(ctx)
	if err != nil {
		return err
	}
	if len(msgs) > 0 {
		p.log.Info("resuming unanswered messages", "count", len(msgs))
	}
	for _, m := range msgs {
		p.enqueue(userKey{m.Bot, m.UserID}, m.ID)
	}
	return nil
}

// Shutdown stops taking queued messages and waits for the ones in progress
// until ctx ends, then cancels them. What is left stays stored and is
// resumed by the next Start.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
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

func (p *Pipeline) enqueue(k userKey, id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return // stored; the next start resumes it
	}
	p.queues[k] = append(p.queues[k], id)
	if !p.active[k] {
		p.active[k] = true
		p.ready = append(p.ready, k)
	}
	p.dispatchLocked()
}

func (p *Pipeline) dispatchLocked() {
	for !p.closed && p.running < p.cfg.Workers && len(p.ready) > 0 {
		k := p.ready[0]
		p.ready = p.ready[1:]
		p.running++
		p.wg.Add(1)
		go p.serve(k)
	}
}

// serve answers the queued messages of one user in order.
func (p *Pipeline) serve(k userKey) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		q := p.queues[k]
		if len(q) == 0 || p.closed {
			delete(p.queues, k)
			delete(p.active, k)
			p.running--
			p.dispatchLocked()
			p.mu.Unlock()
			return
		}
		id := q[0]
		p.queues[k] = q[1:]
		p.mu.Unlock()
		p.handle(p.workCtx, id)
	}
}

// handle answers one message. Errors of storage leave the message as it is,
// to be resumed at the next start; nothing the user sees carries an error.
func (p *Pipeline) handle(ctx context.Context, id int64) {
	m, err := p.store.GetMessage(ctx, id)
	if err != nil {
		p.log.Error("cannot load message", "id", id, "err", err)
		return
	}
	log := p.log.With("bot", m.Bot, "user", m.UserID, "message", m.ID)
	switch m.State {
	case storage.MessageReceived, storage.MessageAnswering:
	case storage.MessageStreaming:
		// Resumed after a stop or crash in the middle of a streamed answer:
		// its first parts are out, the rest is gone with the process. The
		// user is told, rather than getting the answer again from the top.
		p.interrupted(ctx, log, m)
		return
	default:
		return
	}
	if err := p.store.StartAnswer(ctx, id); err != nil {
		log.Error("cannot start answer", "err", err)
		return
	}
	a, failure := p.answer(ctx, log, m)
	if ctx.Err() != nil {
		return // shutting down: the message stays for the next start
	}
	a.Failure = failure
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return
	}
	if len(a.Parts) > 0 {
		p.outbox.Notify()
	}
}

// interrupted ends m, whose streamed answer was cut off, with a notice
// after the parts that were stored.
func (p *Pipeline) interrupted(ctx context.Context, log *slog.Logger, m storage.Message) {
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
		return
	}
	p.outbox.Notify()
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
	answer, err := p.complete(ctx, m, text)
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

// complete asks the LLM with the conversation so far, retrying a failed call
// a couple of times with growing pauses.
func (p *Pipeline) complete(ctx context.Context, m storage.Message, text string) (string, error) {
	msgs, err := p.conversation(ctx, m, text)
	if err != nil {
		return "", err
	}
	var answer string
	err = p.retry(ctx, func() (bool, error) {
		answer, err = p.llm.Complete(ctx, msgs)
		return true, err
	})
	return answer, err
}

// retry calls try until it succeeds, says not to retry, or LLMRetries
// retries failed, pausing longer each time.
func (p *Pipeline) retry(ctx context.Context, try func() (retryable bool, err error)) error {
	pause := time.Second
	for attempt := 0; ; attempt++ {
		retryable, err := try()
		if err == nil {
			return nil
		}
		if !retryable || attempt >= p.cfg.LLMRetries || errors.Is(err, llm.ErrEmpty) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.clock.After(pause):
		}
		pause *= 2
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
	err = p.retry(ctx, func() (bool, error) {
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
