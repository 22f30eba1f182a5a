// Package adapter connects WeCom to the conversation pipeline. It holds the
// self-built-app channel (callback verification and decryption, the WeCom API
// client, the access-token lifecycle) and the channel-neutral parts behind the
// Inbound seam: the pipeline that turns messages into answers and the outbox
// that delivers them. Other channels (AI bot, customer service) stand beside
// the self-built app without touching llm/ or storage/.
//
// It must not log or return secrets: app secrets, callback tokens, AES keys
// and access tokens stay inside; errors that may carry a WeCom URL go through
// Redact.
package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/storage"
)

// Store is what the adapter needs of storage (storage.DB).
type Store interface {
	TokenStore
	MessageStore
	OutboxStore
	PendingCounter
	EnqueueText(ctx context.Context, bot, user string, parts []string) error
	RetryMessage(ctx context.Context, id int64) error
}

// Options are the dependencies of an App.
type Options struct {
	WeCom    WeComConfig
	Bots     []BotConfig
	Pipeline PipelineConfig
	Outbox   OutboxConfig
	Store    Store
	Shared   SharedTokens // nil without Redis
	// Claims, when set, dedupes inbound messages across instances that have
	// a database each (SQLite + Redis); nil with a shared database.
	Claims  MessageClaims
	LLM     Completer
	Clock   clockwork.Clock
	Log     *slog.Logger
	Metrics *Metrics
}

// App is the WeCom side of the service: its bots, pipeline and outbox.
type App struct {
	bots     map[string]*bot
	order    []string
	pipeline *Pipeline
	outbox   *Outbox
	store    Store
	log      *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ErrUnknownBot is returned for a bot name that is not configured.
var ErrUnknownBot = errors.New("adapter: unknown bot")

// New builds the app; Start sets it working.
func New(o Options) (*App, error) {
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	api := newAPIClient(o.WeCom.APIBase, time.Duration(o.WeCom.RequestTimeout))
	a := &App{bots: map[string]*bot{}, store: o.Store, log: o.Log}
	for _, bc := range o.Bots {
		cipher, err := wxcrypto.New(bc.Token, bc.EncodingAESKey, bc.CorpID)
		if err != nil {
			return nil, fmt.Errorf("adapter: bot %s: %w", bc.Name, err)
		}
		tm := newTokenManager(TokenManagerOptions{
			Bot: bc, RefreshBefore: time.Duration(o.WeCom.TokenRefreshBefore), API: api, Store: o.Store,
			Shared: o.Shared, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics,
		})
		a.bots[bc.Name] = &bot{cfg: bc, cipher: cipher, tokens: tm, api: api}
		a.order = append(a.order, bc.Name)
	}
	a.outbox = NewOutbox(o.Outbox, o.Store, a.sendText, o.Clock, o.Log)
	a.pipeline = NewPipeline(o.Pipeline, o.Store, o.LLM, a.outbox, o.Clock, o.Log)
	a.pipeline.metrics = o.Metrics
	o.Metrics.watchLimiter(a.pipeline.limiter)
	o.Metrics.watchOutbox(o.Store)
	if o.Claims != nil {
		a.pipeline.UseClaims(o.Claims)
	}
	return a, nil
}

func (a *App) sendText(ctx context.Context, name, user, content string, dupCheck time.Duration) (string, error) {
	b, ok := a.bots[name]
	if !ok {
		// A bot removed from the config with replies still queued.
		return "", &APIError{API: "message/send", Code: codeNoValidReceiver, Msg: "bot " + name + " is no longer configured"}
	}
	return b.sendText(ctx, user, content, dupCheck)
}

// Start loads the persisted tokens, starts their refresh loops and the
// outbox, and resumes unanswered messages. Shutdown stops it all.
func (a *App) Start(ctx context.Context) error {
	for _, name := range a.order {
		if err := a.bots[name].tokens.Load(ctx); err != nil {
			return fmt.Errorf("adapter: load token of %s: %w", name, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	for _, name := range a.order {
		tm := a.bots[name].tokens
		a.wg.Go(func() { tm.Run(runCtx) })
	}
	a.wg.Go(func() { a.outbox.Run(runCtx) })
	return a.pipeline.Start(ctx)
}

// Shutdown lets answers in progress finish until ctx ends, then stops the
// background loops. Whatever is left stays stored for the next start.
func (a *App) Shutdown(ctx context.Context) error {
	err := a.pipeline.Shutdown(ctx)
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	// Deliver what the finished work produced while the deadline allows.
	a.outbox.flush(ctx)
	return err
}

// BotStatus is what the admin API shows of a bot.
type BotStatus struct {
	Name    string
	CorpID  string
	AgentID int64
	Token   TokenStatus
	LLM     ModelHealth
}

// Bots returns the status of every bot, in configuration order.
func (a *App) Bots() []BotStatus {
	out := make([]BotStatus, 0, len(a.order))
	for _, name := range a.order {
		out = append(out, a.status(a.bots[name]))
	}
	return out
}

func (a *App) status(b *bot) BotStatus {
	return BotStatus{Name: b.cfg.Name, CorpID: b.cfg.CorpID, AgentID: b.cfg.AgentID, Token: b.tokens.Status(),
		LLM: a.pipeline.health.status(b.cfg.Name)}
}

// RefreshToken forces a new token for bot name and returns its status; a
// failure to fetch is part of the status, not an error.
func (a *App) RefreshToken(ctx context.Context, name string) (BotStatus, error) {
	b, ok := a.bots[name]
	if !ok {
		return BotStatus{}, ErrUnknownBot
	}
	_ = b.tokens.Refresh(ctx)
	return a.status(b), nil
}

// TokenManager returns the token manager of bot name (for the SDK's clients
// and for tests), or nil.
func (a *App) TokenManager(name string) *TokenManager {
	if b, ok := a.bots[name]; ok {
		return b.tokens
	}
	return nil
}

var _ Store = (*storage.DB)(nil)
var _ SharedTokens = (*storage.Redis)(nil)

// Send queues text for user of bot name through the outbox, as an answer to
// no message (the admin's "send").
func (a *App) Send(ctx context.Context, name, user, text string) error {
	if _, ok := a.bots[name]; !ok {
		return ErrUnknownBot
	}
	if err := a.store.EnqueueText(ctx, name, user, Split(text, maxPartBytes)); err != nil {
		return err
	}
	a.outbox.Notify()
	return nil
}

// Resend puts the failed reply of message id back in the outbox.
func (a *App) Resend(ctx context.Context, id int64) error {
	if err := a.store.RetryMessage(ctx, id); err != nil {
		return err
	}
	a.outbox.Notify()
	return nil
}
