package web

import (
	"context"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

// Conversations are the users' conversations with the bots (storage.DB).
type Conversations interface {
	ConversationUsers(ctx context.Context, bot string, limit int) ([]storage.UserSummary, error)
	Conversation(ctx context.Context, bot, user string, limit int) ([]storage.Turn, error)
	ResetConversation(ctx context.Context, bot, user string) error
	LatestMessages(ctx context.Context, f storage.MessageFilter) ([]storage.MessageWithReply, error)
}

const (
	usersShown     = 200
	turnsShown     = 200
	exchangesShown = 200
)

// conversationHandler lists users, shows one conversation and resets it.
type conversationHandler struct {
	render *renderer
	bots   Bots
	kf     KF // nil: kf customers are shown by their ids
	store  Conversations
}

type botUsers struct {
	Bot   string
	Users []userRow
}

// userRow is a user of the conversations list; Customer names a kf
// customer (nil: the id is shown).
type userRow struct {
	storage.UserSummary
	Customer *adapter.KFCustomer
}

type conversationsData struct {
	Bots []botUsers
}

func (h *conversationHandler) list(c *gin.Context) {
	only := c.Query("bot")
	var data conversationsData
	for _, b := range h.bots.Bots() {
		if only != "" && b.Name != only {
			continue
		}
		users, err := h.store.ConversationUsers(c.Request.Context(), b.Name, usersShown)
		if err != nil {
			h.render.fail(c, err)
			return
		}
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = u.UserID
		}
		names := customersOf(c.Request.Context(), h.kf, map[string][]string{b.Name: ids})
		rows := make([]userRow, len(users))
		for i, u := range users {
			rows[i] = userRow{UserSummary: u, Customer: customer(names, b.Name, u.UserID)}
		}
		data.Bots = append(data.Bots, botUsers{Bot: b.Name, Users: rows})
	}
	h.render.page(c, http.StatusOK, "conversations", data)
}

type conversationData struct {
	Bot, User string
	// Exchanges are what the user sent and what came back, oldest first:
	// the whole conversation as the user saw it, across resets.
	Exchanges []exchange
	// Turns are the model's context now: what it is sent before the
	// user's next message.
	Turns   []storage.Turn
	CanSend bool // the bot can write to the user first (canSend)
	// Customer names a kf customer; nil: the id is shown.
	Customer *adapter.KFCustomer
}

// exchange is one message of the user with its answer.
type exchange struct {
	storage.MessageWithReply
	Status string
	Cause  string // see messageRow
	Hint   string // see messageRow
	// Reset is how the model's context was started afresh after this
	// message: resetByUser (/reset, /new), resetByAdmin (the panel's
	// Reset conversation, storage.EventAdminReset), or "".
	Reset string
}

const (
	resetByUser  = "user"
	resetByAdmin = "admin"
)

func (h *conversationHandler) show(c *gin.Context) {
	bot, user := c.Param("bot"), c.Param("user")
	b, err := botOf(h.bots, bot)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	msgs, err := h.store.LatestMessages(ctx, storage.MessageFilter{Bot: bot, UserID: user, Limit: exchangesShown})
	if err != nil {
		h.render.fail(c, err)
		return
	}
	turns, err := h.store.Conversation(ctx, bot, user, turnsShown)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	data := conversationData{Bot: bot, User: user, Turns: turns, CanSend: canSend(b),
		Customer: customer(customersOf(ctx, h.kf, map[string][]string{bot: {user}}), bot, user)}
	for i := len(msgs) - 1; i >= 0; i-- { // newest first: turned oldest first
		data.Exchanges = append(data.Exchanges, exchangeOf(msgs[i]))
	}
	h.render.page(c, http.StatusOK, "conversation", data)
}

func exchangeOf(m storage.MessageWithReply) exchange {
	x := exchange{MessageWithReply: m, Status: statusOfState(m.State)}
	if m.Error != "" {
		var detail string
		x.Cause, detail = adapter.ParseFailure(m.Error)
		x.Hint = hintKey(x.Cause, detail)
	}
	switch {
	case m.MsgType == "event" && m.Event == storage.EventAdminReset:
		x.Reset = resetByAdmin
	case m.MsgType == "text" && adapter.IsResetCommand(m.Content) && (len(m.Parts) > 0 || m.State == storage.MessageAnswered):
		// The reset is stored with its reply (storage.SaveAnswer): a
		// /reset not answered yet has not reset anything.
		x.Reset = resetByUser
	}
	return x
}

// reset forgets the conversation: the user's next message starts afresh,
// as after /reset.
func (h *conversationHandler) reset(c *gin.Context) {
	bot, user := c.Param("bot"), c.Param("user")
	if err := knownBot(h.bots, bot); err != nil {
		h.render.fail(c, err)
		return
	}
	if err := h.store.ResetConversation(c.Request.Context(), bot, user); err != nil {
		h.render.fail(c, err)
		return
	}
	redirect(c, conversationURL(bot, user), "/admin/conversations", "conversation_reset")
}

func conversationURL(bot, user string) string {
	return "/admin/conversations/" + url.PathEscape(bot) + "/" + url.PathEscape(user)
}

// botNames are the configured bots' names, for the pages' bot pickers.
func botNames(bots Bots) []string {
	var names []string
	for _, b := range bots.Bots() {
		names = append(names, b.Name)
	}
	return names
}

// knownBot is adapter.ErrUnknownBot for a bot that is not configured.
func knownBot(bots Bots, name string) error {
	_, err := botOf(bots, name)
	return err
}

// botOf is the status of bot name; adapter.ErrUnknownBot if it is not
// configured.
func botOf(bots Bots, name string) (adapter.BotStatus, error) {
	for _, b := range bots.Bots() {
		if b.Name == name {
			return b, nil
		}
	}
	return adapter.BotStatus{}, adapter.ErrUnknownBot
}
