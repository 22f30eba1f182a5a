// Package web serves the admin side of the service: the JSON admin API (and,
// later, the panel), health checks and metrics. It reads the rest of the
// service through the small interfaces declared here and must never show a
// secret: no app secret, callback token, AES key, LLM key, password or access
// token appears in any response.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
)

// Bots is what the admin API needs of the WeCom side (adapter.App).
type Bots interface {
	Bots() []adapter.BotStatus
	RefreshToken(ctx context.Context, name string) (adapter.BotStatus, error)
}

// Pinger checks that a dependency answers (the database).
type Pinger interface {
	Ping(ctx context.Context) error
}

// AdminConfig is the `admin:` section.
type AdminConfig struct {
	Username string
	Password string
}

// Server is the admin side's handlers with their dependencies.
type Server struct {
	admin   AdminConfig
	bots    Bots
	db      Pinger
	metrics http.Handler
}

// New returns the admin server.
func New(admin AdminConfig, bots Bots, db Pinger, metrics http.Handler) *Server {
	return &Server{admin: admin, bots: bots, db: db, metrics: metrics}
}

// Routes mounts /healthz, /metrics and the admin API.
func (s *Server) Routes(r gin.IRouter) {
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	if s.metrics != nil {
		r.GET("/metrics", gin.WrapH(s.metrics))
	}
	api := r.Group("/api", s.basicAuth)
	api.GET("/bots", s.listBots)
	api.POST("/bots/:name/token/refresh", s.refreshToken)
}

// basicAuth guards the JSON API for scripts. Both fields are compared in
// constant time (through fixed-size digests, so lengths leak nothing either).
func (s *Server) basicAuth(c *gin.Context) {
	user, pass, ok := c.Request.BasicAuth()
	if !ok || !s.credentialsMatch(user, pass) {
		c.Header("WWW-Authenticate", `Basic realm="wecombot", charset="UTF-8"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "authentication required"})
		return
	}
	c.Next()
}

func (s *Server) credentialsMatch(user, pass string) bool {
	hu, wu := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(s.admin.Username))
	hp, wp := sha256.Sum256([]byte(pass)), sha256.Sum256([]byte(s.admin.Password))
	okUser := subtle.ConstantTimeCompare(hu[:], wu[:])
	okPass := subtle.ConstantTimeCompare(hp[:], wp[:])
	return okUser&okPass == 1 && s.admin.Password != ""
}

type tokenJSON struct {
	State        string  `json:"state"`
	ExpiresAt    *string `json:"expires_at"`
	FetchedAt    *string `json:"fetched_at"`
	ExpiresIn    int64   `json:"expires_in"`
	RefreshCount int64   `json:"refresh_count"`
	LastError    string  `json:"last_error"`
	Hint         string  `json:"hint,omitempty"`
	Source       string  `json:"source"`
}

type botJSON struct {
	Name        string    `json:"name"`
	CorpID      string    `json:"corp_id"`
	AgentID     int64     `json:"agent_id"`
	CallbackURL string    `json:"callback_path"`
	Token       tokenJSON `json:"token"`
}

func rfc3339(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

func botView(b adapter.BotStatus) botJSON {
	t := b.Token
	expiresIn := int64(0)
	if !t.ExpiresAt.IsZero() {
		expiresIn = max(int64(time.Until(t.ExpiresAt).Seconds()), 0)
	}
	return botJSON{
		Name: b.Name, CorpID: b.CorpID, AgentID: b.AgentID, CallbackURL: "/wecom/" + b.Name + "/callback",
		Token: tokenJSON{
			State: t.State, ExpiresAt: rfc3339(t.ExpiresAt), FetchedAt: rfc3339(t.FetchedAt), ExpiresIn: expiresIn,
			RefreshCount: t.RefreshCount, LastError: t.LastError, Hint: t.Hint, Source: t.Source,
		},
	}
}

func (s *Server) listBots(c *gin.Context) {
	bots := s.bots.Bots()
	out := make([]botJSON, len(bots))
	for i, b := range bots {
		out[i] = botView(b)
	}
	c.JSON(http.StatusOK, gin.H{"bots": out})
}

func (s *Server) refreshToken(c *gin.Context) {
	b, err := s.bots.RefreshToken(c.Request.Context(), c.Param("name"))
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, botView(b))
}

// writeError is the one place that turns errors into HTTP statuses.
func writeError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, adapter.ErrUnknownBot):
		c.JSON(http.StatusNotFound, gin.H{"error": "unknown bot"})
	default:
		c.JSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
	}
}
