// Package web serves the admin side of the service: the panel under /admin/
// (server-rendered html/template pages with embedded assets), the JSON admin
// API for scripts, health checks and metrics. It reads the rest of the
// service through the small interfaces declared here and must never show a
// secret: no app secret, callback token, AES key, LLM key, password or access
// token appears in any response.
package web

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
)

// Bots is what the admin side needs of the WeCom side (adapter.App).
type Bots interface {
	Bots() []adapter.BotStatus
	RefreshToken(ctx context.Context, name string) (adapter.BotStatus, error)
}

// Outbox queues texts for delivery (adapter.App).
type Outbox interface {
	Send(ctx context.Context, bot, user, text string) error
	Resend(ctx context.Context, messageID int64) error
}

// Pinger checks that a dependency answers (the database).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Store is every read and write the admin side makes on the database
// (storage.DB); each handler holds only the part it uses.
type Store interface {
	Pinger
	Stats
	Conversations
	Messages
}

// AdminConfig is the `admin:` section: the login of the panel and the
// admin API.
type AdminConfig struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// ConfigReport is what the configuration page shows: the loaded
// configuration with its secrets already masked, and what `wecombot check`
// says of it.
type ConfigReport struct {
	Text     string
	Problems []string
	// EchoModel: the service answers with the offline echo model (the
	// demo without a model key); Text shows the llm section as it runs.
	EchoModel bool
	// Models are the bots' models, in configuration order.
	Models []BotModel
}

// BotModel is a bot's model as the configuration page shows it: the llm
// section overlaid with the bot's own `llm:` keys. Never the key itself.
type BotModel struct {
	Bot   string
	Model string
	// Host is base_url's host; empty: none (the echo model).
	Host   string
	KeySet bool
	// Overrides are the keys of the llm section the bot sets itself.
	Overrides []string
	// KeyName is where its api_key is set when the bot sets its own, as
	// the hints name it ("bots[1] (hr).llm.api_key"); "": llm.api_key.
	KeyName string
}

// Options are the dependencies of a Server.
type Options struct {
	Admin  AdminConfig
	Bots   Bots
	Outbox Outbox
	Store  Store
	// Config returns the configuration page's report; it must mask secrets.
	Config  func() ConfigReport
	Metrics http.Handler
	Log     *slog.Logger
	// Now is the clock of sessions, login throttling and "today"; tests
	// replace it. Defaults to time.Now.
	Now func() time.Time
	// Location is the time zone the panel shows times in. Defaults to
	// time.Local.
	Location *time.Location
	// SessionTTL is how long a panel login lasts. Defaults to 12h.
	SessionTTL time.Duration
	// Simulator, when set (demo mode, or api_base at the simulator), adds
	// the "chat as a WeCom user" page to the panel.
	Simulator Simulator
	// KF, when set, shows the apps' 微信客服 accounts and names their
	// customers (adapter.App); nil: the kf accounts are listed from the
	// configuration alone and customers by their ids.
	KF KF
}

// Server is the admin side's handlers with their dependencies.
type Server struct {
	admin    credentials
	bots     Bots
	kf       KF
	metrics  http.Handler
	throttle *throttle
	origin   *http.CrossOriginProtection
	render   *renderer
	log      *slog.Logger
	now      func() time.Time

	session      *sessionHandler
	dashboard    *dashboardHandler
	conversation *conversationHandler
	message      *messageHandler
	send         *sendHandler
	config       *configHandler
	chat         *chatHandler // nil without a simulator
	ready        *readyHandler
}

// New returns the admin server. The panel's templates are parsed here, once.
func New(o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := newRenderer(o.Location, o.Now, o.Log)
	admin := credentials{o.Admin}
	th := newThrottle(o.Now)
	ss := newSessions(o.Now, o.SessionTTL)
	var chat *chatHandler
	if o.Simulator != nil {
		chat = newChatHandler(r, o.Bots, o.Simulator, ss, o.Now)
		r.chat = true
	}
	return &Server{
		admin: admin, bots: o.Bots, kf: o.KF, metrics: o.Metrics, throttle: th,
		origin: http.NewCrossOriginProtection(), render: r, log: o.Log, now: o.Now,
		session: &sessionHandler{
			render: r, admin: admin, throttle: th, sessions: ss, log: o.Log,
		},
		dashboard:    &dashboardHandler{render: r, bots: o.Bots, kf: o.KF, stats: o.Store, now: o.Now, loc: o.Location, log: o.Log},
		conversation: &conversationHandler{render: r, bots: o.Bots, kf: o.KF, store: o.Store},
		message:      &messageHandler{render: r, bots: o.Bots, kf: o.KF, store: o.Store, outbox: o.Outbox, config: o.Config},
		send:         &sendHandler{render: r, bots: o.Bots, store: o.Store, outbox: o.Outbox},
		config:       &configHandler{render: r, report: o.Config},
		chat:         chat,
		ready:        &readyHandler{db: o.Store, bots: o.Bots},
	}
}

// Routes mounts /healthz, /readyz, /metrics, the admin API and the panel.
func (s *Server) Routes(r gin.IRouter) {
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	r.GET("/readyz", s.ready.check)
	if s.metrics != nil {
		r.GET("/metrics", gin.WrapH(s.metrics))
	}
	api := r.Group("/api", s.crossOrigin(false), s.basicAuth)
	api.GET("/bots", s.listBots)
	api.POST("/bots/:name/token/refresh", s.refreshToken)
	s.panelRoutes(r)
}

// panelRoutes is the panel's route table.
func (s *Server) panelRoutes(r gin.IRouter) {
	r.GET("/admin/static/*file", s.render.static)
	pub := r.Group("/admin", securityHeaders, s.crossOrigin(true), s.render.switchLanguage)
	pub.GET("/login", s.session.form)
	pub.POST("/login", s.session.login)
	pub.POST("/logout", s.session.logout)

	p := pub.Group("", s.session.require)
	p.GET("/", s.dashboard.show)
	p.POST("/bots/:name/token/refresh", s.dashboard.refresh)
	p.GET("/conversations", s.conversation.list)
	p.GET("/conversations/:bot/:user", s.conversation.show)
	p.POST("/conversations/:bot/:user/reset", s.conversation.reset)
	p.GET("/messages", s.message.list)
	p.GET("/messages/rows", s.message.fragment)
	p.GET("/messages/:id/image/:seq", s.message.image)
	p.POST("/messages/:id/resend", s.message.resend)
	p.GET("/send", s.send.form)
	p.POST("/send", s.send.submit)
	p.GET("/config", s.config.show)
	if s.chat != nil {
		p.GET("/chat", s.chat.form)
		p.POST("/chat", s.chat.submit)
	}
}

// crossOrigin refuses cross-site browser requests that change state (Go's
// CrossOriginProtection: Sec-Fetch-Site, then Origin against Host). Scripts
// that send neither header pass.
func (s *Server) crossOrigin(html bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := s.origin.Check(c.Request); err != nil {
			s.log.Warn("admin: cross-origin request refused", "method", c.Request.Method, "path", c.Request.URL.Path,
				"origin", c.GetHeader("Origin"), "sec_fetch_site", c.GetHeader("Sec-Fetch-Site"))
			if html {
				s.render.fail(c, errCrossOrigin)
			} else {
				s.render.failJSON(c, errCrossOrigin)
			}
			c.Abort()
			return
		}
		c.Next()
	}
}

// basicAuth guards the JSON API for scripts. Wrong passwords count toward the
// same per-IP throttle as the panel's login form.
func (s *Server) basicAuth(c *gin.Context) {
	user, pass, ok := c.Request.BasicAuth()
	if ok {
		if wait := s.throttle.wait(c.RemoteIP()); wait > 0 {
			c.Header("Retry-After", strconv.Itoa(retryAfter(wait)))
			c.AbortWithStatusJSON(http.StatusTooManyRequests, gin.H{"error": "too many failed logins, retry later"})
			return
		}
	}
	if !ok || !s.admin.match(user, pass) {
		if ok {
			s.throttle.fail(c.RemoteIP())
			s.log.Warn("admin: API login failed", "ip", c.RemoteIP())
		}
		c.Header("WWW-Authenticate", `Basic realm="wecombot", charset="UTF-8"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "authentication required"})
		return
	}
	s.throttle.succeed(c.RemoteIP())
	c.Next()
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

// modelJSON is a bot's model and its health (adapter.ModelHealth): the
// field names are a contract with scripts. The key is never shown: api_key
// is masked when one is set, empty when none is.
type modelJSON struct {
	Model     string  `json:"model"`
	Host      string  `json:"host"`
	APIKey    string  `json:"api_key"`
	State     string  `json:"state"`
	LastError string  `json:"last_error"`
	Hint      string  `json:"hint"`
	LastOKAt  *string `json:"last_ok_at"`
}

// maskedSecret stands for a secret that is set, as the configuration page
// shows it.
const maskedSecret = "******"

func modelView(h adapter.ModelHealth) modelJSON {
	v := modelJSON{Model: h.Model, Host: h.Host, State: h.State, LastError: h.LastError, Hint: h.Hint, LastOKAt: rfc3339(h.LastOKAt)}
	if h.KeySet {
		v.APIKey = maskedSecret
	}
	return v
}

// endpointJSON is one model endpoint of GET /api/bots: its model and
// health, and the bots calling it, which share both.
type endpointJSON struct {
	modelJSON
	Bots []string `json:"bots"`
}

// endpointsView are the model endpoints of bots, in the order of the
// first bot calling each.
func endpointsView(bots []adapter.BotStatus) []endpointJSON {
	out := []endpointJSON{}
	index := map[int]int{}
	for _, b := range bots {
		i, ok := index[b.LLM.Endpoint]
		if !ok {
			i = len(out)
			index[b.LLM.Endpoint] = i
			out = append(out, endpointJSON{modelJSON: modelView(b.LLM)})
		}
		out[i].Bots = append(out[i].Bots, b.Name)
	}
	return out
}

// connectionJSON is an AI bot's long connection (adapter.ConnectionStatus)
// as this instance sees it.
type connectionJSON struct {
	State      string  `json:"state"`
	Since      *string `json:"since"`
	Reconnects int     `json:"reconnects"`
	LastError  string  `json:"last_error"`
}

// botJSON is one bot of GET /api/bots. An AI bot has no access token, so
// its entry has no "token" key (rather than a null one), and "connection"
// only in websocket mode; an app's entry has no "mode".
type botJSON struct {
	Name        string          `json:"name"`
	Kind        string          `json:"kind"`
	Mode        string          `json:"mode,omitempty"`
	CorpID      string          `json:"corp_id"`
	AgentID     int64           `json:"agent_id"`
	CallbackURL string          `json:"callback_path"`
	Token       *tokenJSON      `json:"token,omitempty"`
	Connection  *connectionJSON `json:"connection,omitempty"`
	LLM         modelJSON       `json:"llm"`
	// KF: an app with kf.enabled; absent otherwise.
	KF *kfJSON `json:"kf,omitempty"`
}

func rfc3339(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// callbackPath is where WeCom posts the messages of bot name.
func callbackPath(name string) string { return "/wecom/" + name + "/callback" }

// expiresIn is how long the token has left at now, in whole seconds.
func expiresIn(t adapter.TokenStatus, now time.Time) int64 {
	if t.ExpiresAt.IsZero() {
		return 0
	}
	return max(int64(t.ExpiresAt.Sub(now).Seconds()), 0)
}

// isAIBot tells an AI bot from a self-built app (the kind an adapter that
// predates AI bots leaves empty).
func isAIBot(b adapter.BotStatus) bool { return b.Kind == adapter.KindAIBot }

func botView(b adapter.BotStatus, now time.Time) botJSON {
	v := botJSON{
		Name: b.Name, Kind: adapter.KindApp, CorpID: b.CorpID, AgentID: b.AgentID, CallbackURL: callbackPath(b.Name),
		LLM: modelView(b.LLM),
	}
	if isAIBot(b) {
		v.Kind, v.Mode = adapter.KindAIBot, b.Mode
		if c := b.Connection; c != nil {
			v.Connection = &connectionJSON{State: c.State, Since: rfc3339(c.Since), Reconnects: c.Reconnects, LastError: c.LastError}
		}
		return v
	}
	t := b.Token
	v.Token = &tokenJSON{
		State: t.State, ExpiresAt: rfc3339(t.ExpiresAt), FetchedAt: rfc3339(t.FetchedAt), ExpiresIn: expiresIn(t, now),
		RefreshCount: t.RefreshCount, LastError: t.LastError, Hint: t.Hint, Source: t.Source,
	}
	return v
}

// apiBot is botView with the kf accounts of an app with kf.
func (s *Server) apiBot(ctx context.Context, b adapter.BotStatus, now time.Time) botJSON {
	v := botView(b, now)
	if b.KF != nil {
		v.KF = kfView(kfAccountsOf(ctx, s.kf, b, s.log))
	}
	return v
}

func (s *Server) listBots(c *gin.Context) {
	bots, now := s.bots.Bots(), s.now()
	out := make([]botJSON, len(bots))
	for i, b := range bots {
		out[i] = s.apiBot(c.Request.Context(), b, now)
	}
	c.JSON(http.StatusOK, gin.H{"bots": out, "models": endpointsView(bots)})
}

func (s *Server) refreshToken(c *gin.Context) {
	b, err := s.bots.RefreshToken(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.render.failJSON(c, err)
		return
	}
	c.JSON(http.StatusOK, s.apiBot(c.Request.Context(), b, s.now()))
}
