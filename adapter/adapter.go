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
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/internal/httpclient"
	"github.com/wecombot/wecombot/storage"
)

// Store is what the adapter needs of storage (storage.DB).
type Store interface {
	TokenStore
	MessageStore
	OutboxStore
	AIBotStore
	KFStore
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
	Claims MessageClaims
	// Leases, when set, keeps the leases of the AI bots' long connections
	// for instances that have a database each (SQLite + Redis); nil with a
	// shared database, which keeps them itself.
	Leases  ConnectionLeases
	LLM     Completer
	Clock   clockwork.Clock
	Log     *slog.Logger
	Metrics *Metrics
}

// App is the WeCom side of the service: its bots, pipeline and outbox.
type App struct {
	bots     map[string]*bot      // self-built apps
	aibots   map[string]*aibotBot // AI bots in callback mode
	wsbots   map[string]*wsBot    // AI bots on the long connection
	kfbots   map[string]*kfBot    // the 微信客服 channels of apps
	order    []string
	cfgs     map[string]BotConfig
	pipeline *Pipeline
	outbox   *Outbox
	store    Store
	log      *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The long connections stop last: the outbox's last flush needs them.
	stopWS context.CancelFunc
	wsWG   sync.WaitGroup
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
	a := &App{bots: map[string]*bot{}, aibots: map[string]*aibotBot{}, wsbots: map[string]*wsBot{}, kfbots: map[string]*kfBot{},
		cfgs: map[string]BotConfig{}, store: o.Store, log: o.Log}
	for _, bc := range o.Bots {
		var err error
		if bc.Kind == KindAIBot {
			err = a.addAIBot(bc, o)
		} else {
			err = a.addApp(bc, o, api)
		}
		if err != nil {
			return nil, fmt.Errorf("adapter: bot %s: %w", bc.Name, err)
		}
		a.order = append(a.order, bc.Name)
		a.cfgs[bc.Name] = bc
	}
	a.outbox = NewOutbox(o.Outbox, o.Store, a.deliver, o.Clock, o.Log)
	a.pipeline = NewPipeline(o.Pipeline, o.Store, o.LLM, a.outbox, o.Clock, o.Log)
	a.pipeline.parts.send = a.sendApp
	for name, b := range a.bots {
		a.pipeline.UseMedia(name, b) // its messages and its 微信客服 customers'
	}
	for name, b := range a.aibots {
		a.pipeline.UseMedia(name, b)
	}
	for name, w := range a.wsbots {
		a.pipeline.UseMedia(name, w.b)
	}
	for name, b := range a.aibots {
		a.pipeline.UseReplier(name, b)
	}
	for name, w := range a.wsbots {
		a.pipeline.UseReplier(name, w)
		w.attach(a.pipeline)
	}
	for name, k := range a.kfbots {
		a.pipeline.UseReplier(name, channelReplier{app: a.pipeline.parts, kf: k})
		k.attach(a.pipeline)
	}
	a.pipeline.metrics = o.Metrics
	o.Metrics.watchFlood(a.pipeline.flood)
	for _, ep := range a.pipeline.usedEndpoints() {
		o.Metrics.watchLimiter(ep.limiter, ep.Model, ep.Host)
	}
	o.Metrics.watchOutbox(o.Store)
	if o.Claims != nil {
		a.pipeline.UseClaims(o.Claims)
	}
	return a, nil
}

// addApp sets up a self-built app: its callbacks' cipher, its token, its
// sends.
func (a *App) addApp(bc BotConfig, o Options, api *apiClient) error {
	cipher, err := wxcrypto.New(bc.Token, bc.EncodingAESKey, bc.CorpID)
	if err != nil {
		return err
	}
	tm := newTokenManager(TokenManagerOptions{
		Bot: bc, RefreshBefore: time.Duration(o.WeCom.TokenRefreshBefore), API: api, Store: o.Store,
		Shared: o.Shared, Clock: o.Clock, Log: o.Log, Metrics: o.Metrics,
	})
	b := &bot{cfg: bc, cipher: cipher, tokens: tm, api: api}
	a.bots[bc.Name] = b
	if bc.KF.Enabled {
		client := kf.NewClient(api.base, api.http)
		a.kfbots[bc.Name] = newKFBot(b, bc.KF, client, o.Store, o.Store, o.Leases, o.Clock, o.Log)
	}
	return nil
}

// addAIBot sets up an AI bot.
func (a *App) addAIBot(bc BotConfig, o Options) error {
	b := &aibotBot{cfg: bc, store: o.Store, clock: o.Clock, log: o.Log, replies: o.Pipeline.Replies, metrics: o.Metrics,
		http: &http.Client{Transport: httpclient.NewTransport(), Timeout: time.Duration(o.WeCom.RequestTimeout)}}
	if bc.Mode == ModeWebSocket {
		if bc.BotID == "" || bc.Secret == "" {
			return errors.New("the long connection needs bot_id and secret")
		}
		w := newWSBot(b, o.WeCom.AIBotWSURL, o.Store, o.Leases)
		a.wsbots[bc.Name] = w
		return nil
	}
	codec, err := aibot.NewCodec(bc.Token, bc.EncodingAESKey)
	if err != nil {
		return err
	}
	b.codec = codec
	a.aibots[bc.Name] = b
	return nil
}

// deliver sends a part from the outbox through its bot's channel.
func (a *App) deliver(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error) {
	return a.pipeline.replier(part.Bot).Deliver(ctx, part, dupCheck)
}

// sendApp sends a part through message/send of the app it belongs to: the
// Deliver of every bot whose channel is parts.
func (a *App) sendApp(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error) {
	b, ok := a.bots[part.Bot]
	if !ok {
		// A bot removed from the config with replies still queued.
		return "", &APIError{API: "message/send", Code: codeNoValidReceiver, Msg: "bot " + part.Bot + " is no longer configured"}
	}
	return b.sendText(ctx, part.UserID, part.Content, dupCheck)
}

// Start loads the persisted tokens, starts their refresh loops and the
// outbox, and resumes unanswered messages. Shutdown stops it all.
func (a *App) Start(ctx context.Context) error {
	for name, b := range a.bots {
		if err := b.tokens.Load(ctx); err != nil {
			return fmt.Errorf("adapter: load token of %s: %w", name, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	for _, b := range a.bots {
		tm := b.tokens
		a.wg.Go(func() { tm.Run(runCtx) })
	}
	wsCtx, stopWS := context.WithCancel(context.WithoutCancel(ctx))
	a.stopWS = stopWS
	for _, w := range a.wsbots {
		a.wsWG.Go(func() { w.Run(wsCtx) })
	}
	a.wg.Go(func() { a.outbox.Run(runCtx) })
	if err := a.pipeline.Start(ctx); err != nil {
		return err
	}
	for name, k := range a.kfbots {
		if err := k.start(ctx); err != nil {
			return fmt.Errorf("adapter: start kf of %s: %w", name, err)
		}
	}
	return nil
}

// Shutdown lets answers in progress finish until ctx ends, then stops the
// background loops. Whatever is left stays stored for the next start.
func (a *App) Shutdown(ctx context.Context) error {
	// The pulls stop first: what they stored and did not answer is
	// resumed by the next start.
	for _, k := range a.kfbots {
		k.stop()
	}
	err := a.pipeline.Shutdown(ctx)
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	// Deliver what the finished work produced while the deadline allows.
	a.outbox.flush(ctx)
	if a.stopWS != nil {
		a.stopWS()
		a.wsWG.Wait()
	}
	return err
}

// BotStatus is what the admin API shows of a bot.
type BotStatus struct {
	Name    string
	Kind    string // KindApp or KindAIBot
	Mode    string // AI bots: ModeCallback or ModeWebSocket
	CorpID  string
	AgentID int64
	// Token is an app's access token; AI bots have none (HasToken false).
	Token    TokenStatus
	HasToken bool
	// Connection is the long connection of an AI bot in websocket mode
	// (nil otherwise), as this instance sees it.
	Connection *ConnectionStatus
	// LLM is the health of the bot's model endpoint, shared with the
	// other bots calling it.
	LLM ModelHealth
	// KF is the 微信客服 channel of an app with kf.enabled; nil otherwise.
	KF *KFStatus
}

// KFStatus is what the admin API shows of an app's 微信客服 channel.
type KFStatus struct {
	// Accounts are kf.accounts: the open_kfids answered; empty: every
	// account that calls back. KFAccounts has each one's pulls.
	Accounts []string
}

// Bots returns the status of every bot, in configuration order.
func (a *App) Bots() []BotStatus {
	out := make([]BotStatus, 0, len(a.order))
	for _, name := range a.order {
		out = append(out, a.status(name))
	}
	return out
}

func (a *App) status(name string) BotStatus {
	c := a.cfgs[name]
	s := BotStatus{Name: name, Kind: KindApp, CorpID: c.CorpID, AgentID: c.AgentID, LLM: a.pipeline.ModelStatus(name)}
	if b, ok := a.bots[name]; ok {
		s.Token, s.HasToken = b.tokens.Status(), true
		if _, ok := a.kfbots[name]; ok {
			s.KF = &KFStatus{Accounts: slices.Clone(c.KF.Accounts)}
		}
	} else {
		s.Kind, s.Mode = KindAIBot, c.Mode
		if s.Mode == "" {
			s.Mode = ModeCallback
		}
		if w, ok := a.wsbots[name]; ok {
			cs := w.status()
			s.Connection = &cs
		}
	}
	return s
}

// ErrNoKF is returned for the kf accounts of a bot without kf.enabled.
var ErrNoKF = errors.New("adapter: this bot does not answer 微信客服 customers (kf.enabled)")

// KFAccounts returns the 微信客服 accounts bot name has pulled, with the
// end and failure of each one's last pull (by any instance), by open_kfid.
func (a *App) KFAccounts(ctx context.Context, name string) ([]storage.KFAccount, error) {
	if _, ok := a.cfgs[name]; !ok {
		return nil, ErrUnknownBot
	}
	if _, ok := a.kfbots[name]; !ok {
		return nil, ErrNoKF
	}
	return a.store.KFAccounts(ctx, name)
}

// ErrNotApp is returned for a token operation on a bot that has no
// access token: an AI bot.
var ErrNotApp = errors.New("adapter: this bot is not a self-built app; it has no access token")

// RefreshToken forces a new token for bot name and returns its status; a
// failure to fetch is part of the status, not an error.
func (a *App) RefreshToken(ctx context.Context, name string) (BotStatus, error) {
	if _, ok := a.cfgs[name]; !ok {
		return BotStatus{}, ErrUnknownBot
	}
	b, ok := a.bots[name]
	if !ok {
		return BotStatus{}, ErrNotApp
	}
	_ = b.tokens.Refresh(ctx)
	return a.status(name), nil
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

// ErrCannotSend is returned for a send to a bot whose channel can only
// answer messages (an AI bot in callback mode).
var ErrCannotSend = errors.New("adapter: this bot can only answer messages")

// Send queues text for user of bot name through the outbox, as an answer to
// no message (the admin's "send").
func (a *App) Send(ctx context.Context, name, user, text string) error {
	if _, ok := a.cfgs[name]; !ok {
		return ErrUnknownBot
	}
	parts := Split(text, maxPartBytes)
	if _, ok := a.wsbots[name]; ok {
		parts = sendParts(text) // aibot_send_msg to a chat that wrote to the bot
	} else if _, ok := a.bots[name]; !ok {
		return ErrCannotSend
	} else if IsKFUser(user) {
		if _, ok := a.kfbots[name]; !ok {
			return ErrNoKF
		}
		parts = kf.Budget(text, kfCutNote, Split) // WeCom delivers 5 at most
	}
	if err := a.store.EnqueueText(ctx, name, user, parts); err != nil {
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
