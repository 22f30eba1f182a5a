package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
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
	for _, b := range h.bots.Bots() {
		if canSend(b) {
			data.BotNames = append(data.BotNames, b.Name)
		}
	}
	sends, err := h.store.RecentSends(c.Request.Context(), sendsShown)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	data.Sends = sends
	h.render.page(c, status, "send", data)
}

// canSend: the bot can write first. An AI bot in callback mode can only
// answer, within the poll window of a message (adapter.ErrCannotSend).
func canSend(b adapter.BotStatus) bool { return !isAIBot(b) || b.Mode == adapter.ModeWebSocket }

// wecomUserID is WeCom's user id syntax: 1 to 64 letters, digits, _-@.
var wecomUserID = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// groupPrefix starts the stored user id of an AI bot's group chat:
// "chat:<chatid>", one conversation per group.
const groupPrefix = "chat:"

// groupOf is the chat id of a group chat's stored user id, "" for a person.
func groupOf(user string) string {
	if id, ok := strings.CutPrefix(user, groupPrefix); ok {
		return id
	}
	return ""
}

func (h *sendHandler) submit(c *gin.Context) {
	data := sendData{Bot: c.PostForm("bot"), User: strings.TrimSpace(c.PostForm("user")), Text: c.PostForm("text")}
	if err := validateSend(data, h.groupsOK(data.Bot)); err != nil {
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

// groupsOK: bot can send to a group chat ("chat:<chatid>"), as an AI bot on
// the long connection can (aibot_send_msg).
func (h *sendHandler) groupsOK(bot string) bool {
	b, err := botOf(h.bots, bot)
	return err == nil && isAIBot(b) && canSend(b)
}

func validateSend(d sendData, groupsOK bool) error {
	user := d.User
	if g := groupOf(user); g != "" && groupsOK {
		user = g
	}
	switch {
	case d.Bot == "":
		return invalid("send_no_bot")
	case !wecomUserID.MatchString(user) || strings.EqualFold(user, "@all"):
		return invalid("send_bad_user")
	case strings.TrimSpace(d.Text) == "":
		return invalid("send_no_text")
	case utf8.RuneCountInString(d.Text) > maxSendRunes:
		return invalid("send_too_long")
	}
	return nil
}
