package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/silenceper/wechat/v2/credential"
	"golang.org/x/sync/singleflight"

	"github.com/wecombot/wecombot/storage"
)

// TokenStore persists tokens across restarts (storage.DB).
type TokenStore interface {
	LoadToken(ctx context.Context, bot string) (storage.Token, error)
	SaveToken(ctx context.Context, t storage.Token) error
	SaveTokenError(ctx context.Context, bot, corpID string, agentID int64, lastErr string) error
	ForgetToken(ctx context.Context, bot, value string) error
}

// SharedTokens shares tokens between instances (storage.Redis).
type SharedTokens interface {
	LoadShared(ctx context.Context, key string) (storage.SharedToken, error)
	StoreShared(ctx context.Context, key string, t storage.SharedToken) error
	DropShared(ctx context.Context, key, value string) (bool, error)
	Lease(ctx context.Context, key string, ttl time.Duration) (release func(), ok bool, err error)
}

// ErrNoToken wraps the reason why no access token can be had right now.
var ErrNoToken = errors.New("wecom: no access token")

// Token sources, as reported by Status.
const (
	SourceGettoken = "gettoken"
	SourceDatabase = "database"
	SourceRedis    = "redis"
)

// Token states, as reported by Status.
const (
	TokenValid      = "valid"
	TokenRefreshing = "refreshing"
	TokenExpired    = "expired"
	TokenError      = "error"
	TokenNone       = "none"
)

const (
	// fetchTimeout bounds one refresh, whoever waits for it.
	fetchTimeout = 20 * time.Second
	// leaseTTL bounds how long an instance that died holding the Redis
	// lease blocks the others.
	leaseTTL = 15 * time.Second
)

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

func (m *TokenManager) sharedKey() string {
	return "wecombot:token:" + m.corpID + ":" + strconv.FormatInt(m.agentID, 10)
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

// refresh replaces the token stale (empty when there is none) through a
// single flight: concurrent callers share one attempt. The attempt does not
// die with the first caller's ctx.
func (m *TokenManager) refresh(ctx context.Context, stale string) (*tokenState, error) {
	st, err := m.flight(ctx, stale)
	if err == nil && stale != "" && st.value == stale && !m.isCurrent(stale) {
		// We joined a flight that began before stale was refused, and it
		// handed stale back: Do would retry with the refused token.
		st, err = m.flight(ctx, stale)
	}
	return st, err
}

func (m *TokenManager) flight(ctx context.Context, stale string) (*tokenState, error) {
	ch := m.sf.DoChan("token", func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		m.setRefreshing(true)
		defer m.setRefreshing(false)
		return m.obtain(fctx, stale)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*tokenState), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (m *TokenManager) setRefreshing(on bool) {
	m.mu.Lock()
	m.refreshing = on
	m.mu.Unlock()
}

// obtain runs inside the single flight.
func (m *TokenManager) obtain(ctx context.Context, stale string) (*tokenState, error) {
	// A flight that finished just before this one may already have done the work.
	if s := m.cur.Load(); s != nil && s.value != stale && m.clock.Now().Before(s.usableUntil) {
		return s, nil
	}
	// Or failed: its backoff also holds for callers that passed the gate
	// before it ended, or they would each call gettoken again.
	if err := m.gate(); err != nil {
		return nil, err
	}
	// Redis is tried even while it is marked down: refreshes are rare, and
	// this is how its return is noticed (both are logged once).
	if m.shared != nil {
		st, err := m.obtainShared(ctx, stale)
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, errSharedUnavailable) {
			return nil, err
		}
	}
	st, err := m.fetch(ctx, stale)
	if err != nil {
		return nil, err
	}
	return st, nil
}

var errSharedUnavailable = errors.New("shared token store unavailable")

// obtainShared lets exactly one instance call gettoken: the holder of the
// Redis lease fetches and publishes; the others wait and adopt its token.
func (m *TokenManager) obtainShared(ctx context.Context, stale string) (*tokenState, error) {
	key := m.sharedKey()
	for {
		if st, ok, err := m.adoptShared(ctx, key, stale); err != nil || ok {
			return st, err
		}
		release, got, err := m.shared.Lease(ctx, key, leaseTTL)
		if err != nil {
			m.sharedFailed(err)
			return nil, errSharedUnavailable
		}
		if !got {
			// Another instance is fetching: wait for its token.
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: waiting for another instance: %w", ErrNoToken, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		st, err := m.fetchUnderLease(ctx, key, stale)
		release()
		return st, err
	}
}

func (m *TokenManager) fetchUnderLease(ctx context.Context, key, stale string) (*tokenState, error) {
	// The previous holder may have published while we waited for the lease.
	if st, ok, err := m.adoptShared(ctx, key, stale); err != nil || ok {
		return st, err
	}
	st, err := m.fetch(ctx, stale)
	if err != nil {
		return nil, err
	}
	sh := storage.SharedToken{Value: st.value, ExpiresAt: st.expiresAt, FetchedAt: st.fetchedAt}
	if st.refreshAt.Equal(st.expiresAt) {
		sh.RefreshAfter = st.refreshAt
	}
	if err := m.shared.StoreShared(ctx, key, sh); err != nil {
		m.sharedFailed(err)
	}
	return st, nil
}

// adoptShared takes the token published in Redis when it is usable and is
// not the one being replaced (or is, but was confirmed by a refetch that
// returned it unchanged and must not be asked again before refresh_after).
func (m *TokenManager) adoptShared(ctx context.Context, key, stale string) (*tokenState, bool, error) {
	sh, err := m.shared.LoadShared(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		m.sharedOK()
		return nil, false, nil
	}
	if err != nil {
		m.sharedFailed(err)
		return nil, false, errSharedUnavailable
	}
	m.sharedOK()
	now := m.clock.Now()
	st := m.state(sh.Value, sh.FetchedAt, sh.ExpiresAt, sh.RefreshAfter, SourceRedis)
	if !now.Before(st.usableUntil) {
		return nil, false, nil
	}
	if sh.Value == stale && !(now.Before(sh.RefreshAfter) && m.isCurrent(stale)) {
		return nil, false, nil
	}
	if cur := m.cur.Load(); cur != nil && cur.value == sh.Value && now.Before(cur.refreshAt) {
		// Our own token, republished: keep our schedule, unless it is due
		// (a refetch returned it unchanged): then take refresh_after, or
		// the loop would come straight back here.
		st = cur
	} else {
		m.persist(ctx, st, false)
	}
	m.install(st)
	return st, true, nil
}

// isCurrent reports whether value is our token and still usable (it was not
// refused by WeCom).
func (m *TokenManager) isCurrent(value string) bool {
	s := m.cur.Load()
	return s != nil && s.value == value && m.clock.Now().Before(s.usableUntil)
}

// fetch calls gettoken and installs the result.
func (m *TokenManager) fetch(ctx context.Context, stale string) (*tokenState, error) {
	value, ttl, err := m.api.getToken(ctx, m.corpID, m.secret)
	if err != nil {
		m.metrics.tokenFetch(m.bot, fetchResult(err))
		m.metrics.apiError(m.bot, "gettoken", err)
		m.failed(ctx, err)
		return nil, fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	m.metrics.tokenFetch(m.bot, "ok")
	now := m.clock.Now()
	st := m.state(value, now, now.Add(ttl), time.Time{}, SourceGettoken)
	// Older WeCom docs: a repeat fetch inside the validity returns the same
	// token. Its expiry is the one we already know; trusting expires_in
	// again would have us use it after WeCom stops accepting it. The next
	// try is at that expiry, not in a loop.
	if prev := m.cur.Load(); prev != nil && prev.value == value && now.Before(prev.expiresAt) {
		st = m.state(value, prev.fetchedAt, prev.expiresAt, prev.expiresAt, SourceGettoken)
		m.log.Info("gettoken returned the token already held; keeping its expiry", "expires_at", prev.expiresAt.UTC())
	}
	m.succeeded()
	m.persist(ctx, st, true)
	m.install(st)
	m.log.Info("access token obtained", "expires_at", st.expiresAt.UTC(), "refresh_at", st.refreshAt.UTC())
	return st, nil
}

func fetchResult(err error) string {
	var e *APIError
	switch {
	case errors.As(err, &e) && configError(err):
		return "config_error"
	case errors.As(err, &e):
		return "api_error"
	default:
		return "network_error"
	}
}

func (m *TokenManager) persist(ctx context.Context, st *tokenState, counted bool) {
	err := m.db.SaveToken(ctx, storage.Token{
		Bot: m.bot, CorpID: m.corpID, AgentID: m.agentID, Value: st.value,
		ExpiresAt: st.expiresAt, FetchedAt: st.fetchedAt,
	})
	if err != nil {
		// The token still works from memory; the next restart pays one fetch.
		m.log.Error("cannot persist access token", "err", err)
	}
	m.mu.Lock()
	m.refreshCount++
	m.mu.Unlock()
}

func (m *TokenManager) install(st *tokenState) {
	m.cur.Store(st)
	m.arm(st)
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// arm sets st to lapse at its usableUntil, replacing the timer of the token
// it replaces. A timer fires a little late under load; the skew between
// usableUntil and the real expiry absorbs that.
func (m *TokenManager) arm(st *tokenState) {
	m.timerMu.Lock()
	defer m.timerMu.Unlock()
	if m.lapse != nil {
		m.lapse.Stop()
		m.lapse = nil
	}
	d := st.usableUntil.Sub(m.clock.Now())
	if d <= 0 {
		st.lapsed.Store(true)
		return
	}
	m.lapse = m.clock.AfterFunc(d, func() { st.lapsed.Store(true) })
}

func (m *TokenManager) succeeded() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = nil
	m.blockedUntil = time.Time{}
	m.retry.Reset()
	m.configRetry.Reset()
}

// failed records a gettoken failure and sets the backoff: long for
// configuration errors (tokenConfigBackOff), short and with jitter for the
// rest (tokenRetryBackOff).
func (m *TokenManager) failed(ctx context.Context, err error) {
	now := m.clock.Now()
	m.mu.Lock()
	var delay time.Duration
	if configError(err) {
		delay = m.configRetry.NextBackOff()
	} else {
		delay = m.retry.NextBackOff()
	}
	m.lastErr = err
	m.lastErrAt = now
	m.blockedUntil = now.Add(delay)
	m.mu.Unlock()
	msg := err.Error()
	if h := Hint(err); h != "" {
		msg += " — " + h
	}
	m.log.Warn("cannot obtain access token", "err", Redact(err.Error()), "hint", Hint(err), "retry_in", delay.Round(time.Second))
	if err := m.db.SaveTokenError(ctx, m.bot, m.corpID, m.agentID, Redact(msg)); err != nil {
		m.log.Error("cannot persist token error", "err", err)
	}
}

func (m *TokenManager) sharedFailed(err error) {
	if m.sharedDown.CompareAndSwap(false, true) {
		m.log.Warn("redis unavailable: using this instance's own token until it is back", "err", err)
	}
}

func (m *TokenManager) sharedOK() {
	if m.sharedDown.CompareAndSwap(true, false) {
		m.log.Info("redis available again: sharing tokens")
	}
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

// Refresh replaces the token now (the admin's button), ignoring any backoff.
func (m *TokenManager) Refresh(ctx context.Context) error {
	m.mu.Lock()
	m.blockedUntil = time.Time{}
	m.mu.Unlock()
	stale := ""
	if s := m.cur.Load(); s != nil {
		stale = s.value
	}
	_, err := m.refresh(ctx, stale)
	return err
}

// Run refreshes the token in the background until ctx ends, so that no
// traffic is needed for it to stay fresh.
func (m *TokenManager) Run(ctx context.Context) {
	for {
		wait := m.untilNextRefresh()
		timer := m.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-m.kick:
			timer.Stop()
			continue
		case <-timer.Chan():
		}
		stale := ""
		if s := m.cur.Load(); s != nil {
			stale = s.value
		}
		if s := m.cur.Load(); s == nil || !m.clock.Now().Before(s.refreshAt) || s.usableUntil.IsZero() {
			if m.gate() == nil {
				_, _ = m.refresh(ctx, stale) // failures are logged and backed off in fetch
			}
		}
	}
}

func (m *TokenManager) untilNextRefresh() time.Duration {
	now := m.clock.Now()
	at := now
	if s := m.cur.Load(); s != nil && !s.usableUntil.IsZero() {
		at = s.refreshAt
	}
	m.mu.Lock()
	if m.lastErr != nil && m.blockedUntil.After(at) {
		at = m.blockedUntil
	}
	m.mu.Unlock()
	return max(at.Sub(now), 0)
}

// TokenStatus is what the admin API shows of a token; never its value.
type TokenStatus struct {
	State        string
	ExpiresAt    time.Time
	FetchedAt    time.Time
	RefreshCount int64
	LastError    string
	Hint         string
	Source       string
}

// Status reports the token's state for the admin API and the panel.
func (m *TokenManager) Status() TokenStatus {
	now := m.clock.Now()
	var st TokenStatus
	s := m.cur.Load()
	if s != nil {
		st.ExpiresAt, st.FetchedAt, st.Source = s.expiresAt, s.fetchedAt, s.source
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st.RefreshCount = m.refreshCount
	if m.lastErr != nil {
		st.LastError = Redact(m.lastErr.Error())
		st.Hint = Hint(m.lastErr)
	}
	switch {
	case m.refreshing:
		st.State = TokenRefreshing
	case s != nil && now.Before(s.usableUntil):
		st.State = TokenValid
	case m.lastErr != nil:
		st.State = TokenError
	case s != nil:
		st.State = TokenExpired
	default:
		st.State = TokenNone
	}
	return st
}

// expiresIn is the metric's view: seconds until the token expires, 0 when
// there is none (or it was refused).
func (m *TokenManager) expiresIn() float64 {
	s := m.cur.Load()
	if s == nil || s.usableUntil.IsZero() {
		return 0
	}
	return max(s.expiresAt.Sub(m.clock.Now()).Seconds(), 0)
}
