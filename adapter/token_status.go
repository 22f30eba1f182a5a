package adapter

import "time"

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
