package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/silenceper/wechat/v2/credential"
	"golang.org/x/sync/singleflight"

	"github.com/wecombot/wecombot/storage"
)

// The token manager's reads: Get and what the SDK and the senders call
// (GetAccessToken, Do, Invalidate). The refresh loop and the fetches are in
// token_refresh.go, the sharing through Redis in token_shared.go, what the
// admin sees in token_status.go.

// TokenStore persists tokens across restarts (storage.DB).
type TokenStore interface {
	LoadToken(ctx context.Context, bot string) (storage.Token, error)
	SaveToken(ctx context.Context, t storage.Token) error
	SaveTokenError(ctx context.Context, bot, corpID string, agentID int64, lastErr string) error
	ForgetToken(ctx context.Context, bot, value string) error
}

// ErrNoToken wraps the reason why no access token can be had right now.
var ErrNoToken = errors.New("wecom: no access token")

// tokenState is an immutable snapshot of a token; readers load it atomically.
type tokenState struct {
	value     string
	expiresAt time.Time
	fetchedAt time.Time
	// usableUntil is expiresAt less a small skew for clocks and travel.
	usableUntil time.Time
	// refreshAt is when the background loop replaces the token.
	refreshAt time.Time
	source    string
	// lapsed turns true at usableUntil (a clock timer sets it), so that a
	// read needs no clock: a clock read (~35 ns here) costs more than the
	// rest of Get, and the token-read target is at least 20× faster than
	// silenceper's ~600 ns (BenchmarkTokenGet; with a clock read, 14–22×).
	lapsed *atomic.Bool
}

// TokenManager owns the access token of one WeCom app (corp id + agent id +
// secret): it reads lock-free, refreshes ahead of expiry, fetches once at a
// time, persists the token, heals on a refused token, and shares it through
// Redis when configured. It implements silenceper's
// credential.AccessTokenContextHandle so the SDK's clients can use it.
type TokenManager struct {
	bot, corpID, secret string
	agentID             int64
	refreshBefore       time.Duration

	api     *apiClient
	db      TokenStore
	shared  SharedTokens // nil: single instance
	clock   clockwork.Clock
	log     *slog.Logger
	metrics *Metrics

	cur atomic.Pointer[tokenState]

	timerMu sync.Mutex
	lapse   clockwork.Timer // marks cur lapsed at its usableUntil
	sf      singleflight.Group
	kick    chan struct{}

	sharedDown atomic.Bool

	mu           sync.Mutex // guards the fields below; never on the read path
	lastErr      error
	lastErrAt    time.Time
	blockedUntil time.Time
	refreshing   bool
	refreshCount int64
	retry        *backoff.ExponentialBackOff // after a transient failure: tokenRetryBackOff
	configRetry  *backoff.ExponentialBackOff // after a configuration error: tokenConfigBackOff
}

var _ credential.AccessTokenContextHandle = (*TokenManager)(nil)

// TokenManagerOptions are the dependencies of a TokenManager.
type TokenManagerOptions struct {
	Bot           BotConfig
	RefreshBefore time.Duration
	API           *apiClient
	Store         TokenStore
	Shared        SharedTokens
	Clock         clockwork.Clock
	Log           *slog.Logger
	Metrics       *Metrics
}

func newTokenManager(o TokenManagerOptions) *TokenManager {
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	m := &TokenManager{
		bot: o.Bot.Name, corpID: o.Bot.CorpID, secret: o.Bot.Secret, agentID: o.Bot.AgentID,
		refreshBefore: o.RefreshBefore, api: o.API, db: o.Store, shared: o.Shared,
		clock: o.Clock, log: o.Log.With("bot", o.Bot.Name), metrics: o.Metrics,
		kick: make(chan struct{}, 1), retry: tokenRetryBackOff(), configRetry: tokenConfigBackOff(),
	}
	o.Metrics.watch(m)
	return m
}

// Load adopts the persisted token when it is still valid, so that a restart
// costs no gettoken call.
func (m *TokenManager) Load(ctx context.Context) error {
	t, err := m.db.LoadToken(ctx, m.bot)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.refreshCount = t.RefreshCount
	if t.LastError != "" {
		m.lastErr = errors.New(t.LastError)
	}
	m.mu.Unlock()
	// A token of another app (the bot was re-pointed in the config) is not ours.
	if t.CorpID != m.corpID || t.AgentID != m.agentID || t.Value == "" {
		return nil
	}
	st := m.state(t.Value, t.FetchedAt, t.ExpiresAt, time.Time{}, SourceDatabase)
	if m.clock.Now().Before(st.usableUntil) {
		m.cur.Store(st)
		m.arm(st)
	}
	return nil
}

// state builds a snapshot and decides when it is refreshed: refresh_before
// ahead of expiry, with jitter so that instances and bots spread out; at half
// the lifetime when the lifetime is shorter than that; at expiry when WeCom
// handed back a token we already held (refreshAfter).
func (m *TokenManager) state(value string, fetchedAt, expiresAt, refreshAfter time.Time, source string) *tokenState {
	life := expiresAt.Sub(fetchedAt)
	skew := min(30*time.Second, life/20)
	st := &tokenState{value: value, expiresAt: expiresAt, fetchedAt: fetchedAt, usableUntil: expiresAt.Add(-skew), source: source, lapsed: new(atomic.Bool)}
	switch {
	case !refreshAfter.IsZero():
		// WeCom confirmed this token by handing it back: use it to its
		// known expiry and ask again only then, so a repeat answer cannot
		// turn into a loop of gettoken calls in the skew window.
		st.refreshAt = refreshAfter
		st.usableUntil = expiresAt
	case life > m.refreshBefore:
		jitter := time.Duration(rand.Int64N(int64(min(m.refreshBefore/10, 30*time.Second)) + 1))
		st.refreshAt = expiresAt.Add(-m.refreshBefore - jitter)
	default:
		st.refreshAt = fetchedAt.Add(life / 2)
	}
	return st
}

// GetAccessToken implements credential.AccessTokenHandle.
func (m *TokenManager) GetAccessToken() (string, error) {
	return m.Get(context.Background())
}

// GetAccessTokenContext implements credential.AccessTokenContextHandle.
func (m *TokenManager) GetAccessTokenContext(ctx context.Context) (string, error) {
	return m.Get(ctx)
}

// Get returns a valid access token. The hot path is two atomic loads;
// only a missing or expired token goes to Redis or WeCom, once for all
// concurrent callers.
func (m *TokenManager) Get(ctx context.Context) (string, error) {
	s := m.cur.Load()
	if s != nil && !s.lapsed.Load() {
		return s.value, nil
	}
	if err := m.gate(); err != nil {
		return "", err
	}
	stale := ""
	if s != nil {
		stale = s.value
	}
	st, err := m.refresh(ctx, stale)
	if err != nil {
		return "", err
	}
	return st.value, nil
}

// gate refuses to call gettoken again while a backoff after a failure runs:
// callers get the last error at once instead of hammering WeCom.
func (m *TokenManager) gate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastErr != nil && m.clock.Now().Before(m.blockedUntil) {
		return fmt.Errorf("%w: %w (next try at %s)", ErrNoToken, m.lastErr, m.blockedUntil.UTC().Format(time.RFC3339))
	}
	return nil
}

// isCurrent reports whether value is our token and still usable (it was not
// refused by WeCom).
func (m *TokenManager) isCurrent(value string) bool {
	s := m.cur.Load()
	return s != nil && s.value == value && m.clock.Now().Before(s.usableUntil)
}

// Invalidate drops token after WeCom refused it (40014, 42001, 41001). Only
// the current token is dropped, so a burst of failures with the same old
// token costs one refetch.
func (m *TokenManager) Invalidate(ctx context.Context, token string) {
	s := m.cur.Load()
	if s == nil || s.value != token || s.usableUntil.IsZero() {
		return
	}
	dead := *s
	dead.usableUntil = time.Time{}
	dead.refreshAt = time.Time{}
	dead.lapsed = new(atomic.Bool)
	dead.lapsed.Store(true)
	if !m.cur.CompareAndSwap(s, &dead) {
		return
	}
	m.log.Warn("WeCom refused the access token; fetching a new one")
	if err := m.db.ForgetToken(ctx, m.bot, token); err != nil {
		m.log.Error("cannot forget refused token", "err", err)
	}
	if m.shared != nil && !m.sharedDown.Load() {
		if _, err := m.shared.DropShared(ctx, m.sharedKey(), token); err != nil {
			m.sharedFailed(err)
		}
	}
}

// Do runs call with a valid token; when WeCom refuses the token, it drops
// it, obtains a new one and runs call once more.
func (m *TokenManager) Do(ctx context.Context, api string, call func(ctx context.Context, token string) error) error {
	token, err := m.Get(ctx)
	if err != nil {
		return err
	}
	err = call(ctx, token)
	if err == nil {
		return nil
	}
	m.metrics.apiError(m.bot, api, err)
	if !tokenRejected(err) {
		return err
	}
	m.Invalidate(ctx, token)
	if token, err = m.Get(ctx); err != nil {
		return err
	}
	err = call(ctx, token)
	m.metrics.apiError(m.bot, api, err)
	return err
}
