package adapter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// SharedTokens shares tokens between instances (storage.Redis).
type SharedTokens interface {
	LoadShared(ctx context.Context, key string) (storage.SharedToken, error)
	StoreShared(ctx context.Context, key string, t storage.SharedToken) error
	DropShared(ctx context.Context, key, value string) (bool, error)
	Lease(ctx context.Context, key string, ttl time.Duration) (release func(), ok bool, err error)
}

// fetchLeaseTTL bounds how long an instance that died holding the Redis
// lease to fetch blocks the others.
const fetchLeaseTTL = 15 * time.Second

func (m *TokenManager) sharedKey() string {
	return "wecombot:token:" + m.corpID + ":" + strconv.FormatInt(m.agentID, 10)
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
		release, got, err := m.shared.Lease(ctx, key, fetchLeaseTTL)
		if err != nil {
			m.sharedFailed(err)
			return nil, errSharedUnavailable
		}
		if !got {
			// Another instance is fetching: look for its token again
			// shortly. A poll of Redis, not a schedule: it waits in real
			// time, and fetchTimeout bounds the whole wait.
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
