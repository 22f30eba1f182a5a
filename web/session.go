package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

const (
	sessionCookie = "wecombot_session"
	// ctxAuthed marks a request of a logged-in admin (for the menu).
	ctxAuthed = "wecombot.authed"
	// ctxSession is the admin's session id (the chat page's history).
	ctxSession = "wecombot.session"
)

// credentials are admin.username and admin.password.
type credentials struct{ AdminConfig }

// match compares both fields in constant time (through fixed-size digests,
// so lengths leak nothing either). An empty password never matches.
func (a credentials) match(user, pass string) bool {
	hu, wu := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(a.Username))
	hp, wp := sha256.Sum256([]byte(pass)), sha256.Sum256([]byte(a.Password))
	okUser := subtle.ConstantTimeCompare(hu[:], wu[:])
	okPass := subtle.ConstantTimeCompare(hp[:], wp[:])
	return okUser&okPass == 1 && a.Password != ""
}

// sessions are the panel's logins, in memory: a restart logs admins out.
type sessions struct {
	now func() time.Time
	ttl time.Duration

	mu      sync.Mutex
	expires map[string]time.Time // by session id
}

func newSessions(now func() time.Time, ttl time.Duration) *sessions {
	return &sessions{now: now, ttl: ttl, expires: map[string]time.Time{}}
}

// create starts a session and returns its id (256 random bits).
func (s *sessions) create() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather)
	id := base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, exp := range s.expires { // logins are rare: sweep here
		if !now.Before(exp) {
			delete(s.expires, k)
		}
	}
	s.expires[id] = now.Add(s.ttl)
	return id
}

// valid says whether id is a live session.
func (s *sessions) valid(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.expires[id]
	if ok && !s.now().Before(exp) {
		delete(s.expires, id)
		return false
	}
	return ok
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.expires, id)
}

// sessionHandler serves login and logout and guards the other pages.
type sessionHandler struct {
	render   *renderer
	admin    credentials
	throttle *throttle
	sessions *sessions
	log      *slog.Logger
}

type loginData struct {
	Next, Username string
	Error          string // message key
}

// require lets a logged-in admin through and sends anyone else to the
// login page, coming back here afterwards.
func (h *sessionHandler) require(c *gin.Context) {
	if id, err := c.Cookie(sessionCookie); err == nil && h.sessions.valid(id) {
		c.Set(ctxAuthed, true)
		c.Set(ctxSession, id)
		c.Next()
		return
	}
	next := "/admin/"
	if c.Request.Method == http.MethodGet {
		next = c.Request.URL.RequestURI()
	}
	c.Redirect(http.StatusSeeOther, "/admin/login?next="+url.QueryEscape(next))
	c.Abort()
}

func (h *sessionHandler) form(c *gin.Context) {
	if id, err := c.Cookie(sessionCookie); err == nil && h.sessions.valid(id) {
		redirect(c, c.Query("next"), "/admin/", "")
		return
	}
	h.render.page(c, http.StatusOK, "login", loginData{Next: c.Query("next")})
}

func (h *sessionHandler) login(c *gin.Context) {
	ip := c.RemoteIP()
	data := loginData{Next: c.PostForm("next"), Username: c.PostForm("username")}
	if wait := h.throttle.wait(ip); wait > 0 {
		c.Header("Retry-After", strconv.Itoa(retryAfter(wait)))
		data.Error = "login.throttled"
		h.render.page(c, http.StatusTooManyRequests, "login", data)
		return
	}
	if !h.admin.match(data.Username, c.PostForm("password")) {
		h.throttle.fail(ip)
		h.log.Warn("admin: login failed", "ip", ip)
		data.Error = "login.wrong"
		h.render.page(c, http.StatusUnauthorized, "login", data)
		return
	}
	h.throttle.succeed(ip)
	id := h.sessions.create()
	http.SetCookie(c.Writer, &http.Cookie{
		// MaxAge, not Expires: relative, so the browser's clock and the
		// service's (injected) clock need not agree. The server enforces
		// the expiry anyway.
		Name: sessionCookie, Value: id, Path: "/admin/", MaxAge: int(h.sessions.ttl.Seconds()),
		HttpOnly: true, Secure: isTLS(c.Request), SameSite: http.SameSiteStrictMode,
	})
	h.log.Info("admin: logged in", "ip", ip)
	redirect(c, data.Next, "/admin/", "")
}

func (h *sessionHandler) logout(c *gin.Context) {
	if id, err := c.Cookie(sessionCookie); err == nil {
		h.sessions.end(id)
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/admin/", MaxAge: -1,
		HttpOnly: true, Secure: isTLS(c.Request), SameSite: http.SameSiteStrictMode,
	})
	redirect(c, "/admin/login", "/admin/login", "logged_out")
}
