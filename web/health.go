package web

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
)

// readyPingTimeout bounds the database check: orchestrators give a probe a
// few seconds, and a hung database is not ready.
const readyPingTimeout = 2 * time.Second

// readyHandler answers /readyz for orchestrators: ready when the database
// answers and every bot has a usable token or a known reason why not. A bot
// that has neither yet (its first gettoken is in flight) is not ready.
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
		state, ok := tokenReadiness(b.Token)
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
