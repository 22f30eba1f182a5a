package wecomsim

import (
	"net/http"
	"time"
)

// tokenBytes gives 96-character tokens: longer than the 64 the service must
// at least expect, well under the 512 WeCom allows.
const tokenBytes = 72

// getToken answers GET /cgi-bin/gettoken?corpid=&corpsecret=.
func (s *Server) getToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.reject(w, r, 43001, "require GET method")
		return
	}
	q := r.URL.Query()
	corpID, secret := q.Get("corpid"), q.Get("corpsecret")
	if corpID == "" {
		s.reject(w, r, 41002, "corpid missing")
		return
	}
	if secret == "" {
		s.reject(w, r, 41004, "corpsecret missing")
		return
	}
	app, knownCorp := -1, false
	for i, a := range s.apps {
		if a.CorpID == corpID {
			knownCorp = true
			if a.Secret == secret {
				app = i
				break
			}
		}
	}
	if !knownCorp {
		s.reject(w, r, 40013, "invalid corpid")
		return
	}
	if app < 0 {
		s.reject(w, r, 40001, "invalid credential")
		return
	}

	s.mu.Lock()
	now := s.now()
	lifetime := s.tokenLifetime
	t := s.current[app]
	if !s.sameToken || t == nil || t.revoked || !now.Before(t.expires) {
		// Earlier tokens stay valid until their own expiry, as WeCom's do.
		t = &token{value: randomString(tokenBytes), app: app, expires: now.Add(lifetime)}
		s.tokens[t.value] = t
		s.current[app] = t
	}
	// Under SameTokenWhileValid t.expires is deliberately left alone while
	// expires_in below claims a full lifetime: that is the trap.
	s.fetches[app]++
	s.mu.Unlock()

	writeJSON(w, map[string]any{
		"errcode":      0,
		"errmsg":       "ok",
		"access_token": t.value,
		"expires_in":   int64(lifetime / time.Second),
	})
}

// checkToken validates ?access_token= the way every WeCom API does and
// returns the app it belongs to, or the errcode and errmsg to refuse with.
func (s *Server) checkToken(r *http.Request) (app int, errcode int, errmsg string) {
	value := r.URL.Query().Get("access_token")
	if value == "" {
		return -1, 41001, "access_token missing"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[value]
	switch {
	case !ok || t.revoked:
		return -1, 40014, "invalid access_token"
	case !s.now().Before(t.expires):
		return -1, 42001, "access_token expired"
	}
	return t.app, 0, ""
}

// postWithToken refuses what every POST API refuses first, in WeCom's
// order: another method (43003), then the access token (see checkToken). It
// returns the token's app, or false once it has answered.
func (s *Server) postWithToken(w http.ResponseWriter, r *http.Request) (int, bool) {
	if r.Method != http.MethodPost {
		s.reject(w, r, 43003, "require POST method")
		return -1, false
	}
	app, errcode, errmsg := s.checkToken(r)
	if errcode != 0 {
		s.reject(w, r, errcode, errmsg)
		return -1, false
	}
	return app, true
}
