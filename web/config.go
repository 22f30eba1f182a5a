package web

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// configHandler shows the loaded configuration, secrets masked by whoever
// built the report (cmd/wecombot), and what `wecombot check` says of it.
type configHandler struct {
	render *renderer
	report func() ConfigReport
}

type configData struct {
	ConfigReport
	Available bool
}

func (h *configHandler) show(c *gin.Context) {
	var data configData
	if h.report != nil {
		data = configData{ConfigReport: h.report(), Available: true}
	}
	h.render.page(c, http.StatusOK, "config", data)
}
