package adapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// fetchTimeout bounds one refresh, whoever waits for it.
const fetchTimeout = 20 * time.Second

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
