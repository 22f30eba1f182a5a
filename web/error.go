package web

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

// inputError is a request the admin can fix; key names the message shown.
type inputError struct{ key string }

func (e *inputError) Error() string { return "web: invalid input: " + e.key }

func invalid(key string) error { return &inputError{key: key} }

// errCrossOrigin is a state-changing request from another site.
var errCrossOrigin = errors.New("web: cross-origin request refused")

// statusOf is the one place that turns errors into HTTP statuses. The key
// names the message the panel shows (and, in English, the API's "error").
func statusOf(err error) (status int, key string) {
	var in *inputError
	switch {
	case errors.As(err, &in):
		return http.StatusBadRequest, "error." + in.key
	case errors.Is(err, errCrossOrigin):
		return http.StatusForbidden, "error.cross_origin"
	case errors.Is(err, adapter.ErrUnknownBot):
		return http.StatusNotFound, "error.unknown_bot"
	case errors.Is(err, adapter.ErrNotApp):
		// The bot exists but has no access token (an AI bot).
		return http.StatusConflict, "error.not_app"
	case errors.Is(err, adapter.ErrCannotSend):
		// The bot exists but only answers (an AI bot in callback mode).
		return http.StatusConflict, "error.cannot_send"
	case errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound, "error.not_found"
	default:
		return http.StatusInternalServerError, "error.internal"
	}
}

// failJSON answers an API request with err's status and a short English
// reason; the details of a 500 go to the log only.
func (r *renderer) failJSON(c *gin.Context, err error) {
	status, key := statusOf(err)
	if status == http.StatusInternalServerError {
		r.log.Error("admin API", "path", c.Request.URL.Path, "err", err)
	}
	c.AbortWithStatusJSON(status, gin.H{"error": r.dicts[langEN][key]})
}

// fail answers a panel request with an error page in the admin's language.
func (r *renderer) fail(c *gin.Context, err error) {
	status, key := statusOf(err)
	if status == http.StatusInternalServerError {
		r.log.Error("admin panel", "path", c.Request.URL.Path, "err", err)
	}
	r.page(c, status, "error", struct{ Message string }{r.lang(c).T(key)})
	c.Abort()
}
