package wecomsim

import (
	"fmt"
	"strings"
	"time"
)

// FailNext makes the next n calls to api (APIGetToken, APISend or one of
// the APIKF… names) answer
// errcode with errmsg, whatever they carry. Calls queue: FailNext(send, -1,
// …, 2) then FailNext(send, 45009, …, 1) fails three sends in that order.
// An unknown api panics, because a typo would otherwise let a test pass
// without injecting anything.
func (s *Server) FailNext(api string, errcode int, errmsg string, n int) {
	if api != APIGetToken && api != APISend && api != APIMediaGet && !isKFAPI(api) {
		panic(fmt.Sprintf("wecomsim: FailNext: unknown api %q (want %q, %q or a kf API)", api, APIGetToken, APISend))
	}
	if n <= 0 {
		return
	}
	if errmsg == "" {
		errmsg = "injected error"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[api] = append(s.faults[api], fault{errcode: errcode, errmsg: errmsg, left: n})
}

// takeFault consumes one injected failure for api. s.mu must be held.
func (s *Server) takeFault(api string) (fault, bool) {
	q := s.faults[api]
	if len(q) == 0 {
		return fault{}, false
	}
	f := q[0]
	q[0].left--
	if q[0].left == 0 {
		s.faults[api] = q[1:]
	}
	return f, true
}

// RevokeTokens invalidates every token issued so far, as WeCom does when a
// secret is reset or for reasons of its own: they answer 40014 from now on,
// and the next gettoken issues a new one.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		t.revoked = true
	}
	for i := range s.current {
		s.current[i] = nil
	}
}

// SetDown makes every request answer HTTP 503 while on.
func (s *Server) SetDown(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = on
}

// SetLatency delays every answer by d of real time (not the injected clock),
// so callers' HTTP timeouts can be exercised. A request whose client gives up
// meanwhile gets no answer.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetTokenLifetime changes the lifetime of tokens issued from now on; tokens
// already issued keep their expiry. d <= 0 restores the 7200s default.
func (s *Server) SetTokenLifetime(d time.Duration) {
	if d <= 0 {
		d = defaultTokenLifetime
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = d
}

// SetInvalidUser makes userID (case-insensitive, like WeCom's user IDs) an
// account that cannot receive messages, e.g. one that left the company or is
// outside the app's visible range. Sends to it are refused as WeCom refuses
// them: see message/send in send.go.
func (s *Server) SetInvalidUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidUsers[strings.ToLower(userID)] = true
}

// SetValidUser undoes SetInvalidUser (the user joined the corp again).
func (s *Server) SetValidUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.invalidUsers, strings.ToLower(userID))
}
