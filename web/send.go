package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/storage"
)

const (
	sendsShown = 20
	// maxSendRunes bounds a text typed in the panel; the outbox splits it
	// into WeCom-sized parts.
	maxSendRunes = 10000
)

// sendHandler sends a text to a user of a bot through the outbox, like an
// answer: stored first, delivered in order, retried.
type sendHandler struct {
	render *renderer
	bots   Bots
	store  Messages
	outbox Outbox
}

type sendData struct {
	Bot, User, Text string
	BotNames        []string
	Error           string // message key
	Sends           []storage.OutboxPart
}

func (h *sendHandler) form(c *gin.Context) {
	h.show(c, http.StatusOK, sendData{Bot: c.Query("bot"), User: c.Query("user")})
}

func (h *sendHandler) show(c *gin.Context, status int, data sendData) {
	data.BotNames = botNames(h.bots)
	sends, err := h.store.RecentSends(c.Request.Context(), sendsShown)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	data.Sends = sends
	h.render.page(c, status, "send", data)
}

// wecomUserID is WeCom's user id syntax: 1 to 64 letters, digits, _-@.
var wecomUserID = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

func (h *sendHandler) submit(c *gin.Context) {
	data := sendData{Bot: c.PostForm("bot"), User: strings.TrimSpace(c.PostForm("user")), Text: c.PostForm("text")}
	if err := validateSend(data); err != nil {
		_, key := statusOf(err)
		data.Error = key
		h.show(c, http.StatusBadRequest, data)
		return
	}
	if err := h.outbox.Send(c.Request.Context(), data.Bot, data.User, data.Text); err != nil {
		h.render.fail(c, err)
		return
	}
	q := url.Values{"bot": {data.Bot}, "user": {data.User}}
	redirect(c, "/admin/send?"+q.Encode(), "/admin/send", "queued")
}

func validateSend(d sendData) error {
	switch {
	case d.Bot == "":
		return invalid("send_no_bot")
	case !wecomUserID.MatchString(d.User) || strings.EqualFold(d.User, "@all"):
		return invalid("send_bad_user")
	case strings.TrimSpace(d.Text) == "":
		return invalid("send_no_text")
	case utf8.RuneCountInString(d.Text) > maxSendRunes:
		return invalid("send_too_long")
	}
	return nil
}
