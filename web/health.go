package web

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/aibot"
)

// readyPingTimeout bounds the database check: orchestrators give a probe a
// few seconds, and a hung database is not ready.
const readyPingTimeout = 2 * time.Second

// readyHandler answers /readyz for orchestrators: ready when the database
// answers and every bot has a usable token (an app) or connection (an AI
// bot on the long connection) or a known reason why not. A bot that has
// neither yet (its first gettoken or dial is in flight) is not ready.
type readyHandler struct {
	db   Pinger
	bots Bots
}

type readyJSON struct {
	Ready    bool              `json:"ready"`
	Database string            `json:"database"`
	Bots     map[string]string `json:"bots"`
}

func (h *readyHandler) check(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), readyPingTimeout)
	defer cancel()
	out := readyJSON{Ready: true, Database: "ok", Bots: map[string]string{}}
	if err := h.db.Ping(ctx); err != nil {
		out.Ready, out.Database = false, err.Error()
	}
	for _, b := range h.bots.Bots() {
		state, ok := readiness(b)
		out.Bots[b.Name] = state
		out.Ready = out.Ready && ok
	}
	status := http.StatusOK
	if !out.Ready {
		status = http.StatusServiceUnavailable
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(status, out)
}

// readiness describes a bot for /readyz and says whether it counts as
// ready: an app by its token, an AI bot by its long connection. An AI bot
// in callback mode needs nothing before WeCom calls: it is ready.
func readiness(b adapter.BotStatus) (string, bool) {
	switch {
	case !isAIBot(b):
		return tokenReadiness(b.Token)
	case b.Connection == nil:
		return b.Mode, true
	}
	return connectionReadiness(*b.Connection)
}

// connectionReadiness is tokenReadiness for a long connection: up, held
// by another instance, or down for a known reason (a refused subscribe, a
// connection taken over) is ready; the first dial in flight is not.
func connectionReadiness(c adapter.ConnectionStatus) (string, bool) {
	switch aibot.State(c.State) {
	case aibot.StateConnected, adapter.StateStandby:
		return c.State, true
	case aibot.StateError, aibot.StateReplaced:
		if c.LastError != "" {
			return c.State + ": " + c.LastError, true
		}
		return c.State, true
	case aibot.StateConnecting:
		// A reconnect after a drop is like a token's retry after an error.
		return c.State, c.Reconnects > 0 || c.LastError != ""
	}
	return c.State, false
}

// tokenReadiness describes a bot's token for /readyz and says whether the
// bot counts as ready: a valid token, one being refreshed, or an error whose
// reason is known (the admin has something to act on; restarting the pod
// would not help). LastError is already redacted by the adapter.
func tokenReadiness(t adapter.TokenStatus) (string, bool) {
	switch {
	case t.State == adapter.TokenValid:
		return t.State, true
	case t.State == adapter.TokenRefreshing:
		// The first fetch shows as refreshing too, with no token and no error.
		return t.State, !t.ExpiresAt.IsZero() || t.LastError != ""
	case t.State == adapter.TokenError && t.LastError != "":
		return "error: " + t.LastError, true
	}
	return t.State, false
}
