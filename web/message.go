package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// Messages are the inbound messages and the admin's sends (storage.DB).
type Messages interface {
	LatestMessages(ctx context.Context, f storage.MessageFilter) ([]storage.MessageWithReply, error)
	RecentSends(ctx context.Context, limit int) ([]storage.OutboxPart, error)
	// AIBotStreamsOf gives the AI bots' answers (with the users' feedback)
	// by message id; other messages have none.
	AIBotStreamsOf(ctx context.Context, messageIDs []int64) (map[int64]storage.AIBotStream, error)
	// MediaOf gives the users' stored images (without their bytes) by
	// message id; MessageMedia one message's, with them.
	MediaOf(ctx context.Context, messageIDs []int64) (map[int64][]storage.MessageMedia, error)
	MessageMedia(ctx context.Context, id int64, withData bool) ([]storage.MessageMedia, error)
}

const messagesShown = 50

// Message statuses as the panel shows and filters them.
const (
	statusAnswered = "answered"
	statusFailed   = "failed"
	statusPending  = "pending"
	statusIgnored  = "ignored"
)

// statesOf are the stored states a status filter selects; nil: all.
func statesOf(status string) []string {
	switch status {
	case statusAnswered:
		return []string{storage.MessageAnswered}
	case statusFailed:
		return []string{storage.MessageFailed}
	case statusPending:
		return storage.PendingStates
	case statusIgnored:
		return []string{storage.MessageIgnored}
	}
	return nil
}

func statusOfState(state string) string {
	switch state {
	case storage.MessageAnswered:
		return statusAnswered
	case storage.MessageFailed:
		return statusFailed
	case storage.MessageIgnored:
		return statusIgnored
	}
	return statusPending
}

// messageHandler lists the latest messages and re-sends failed answers.
type messageHandler struct {
	render *renderer
	bots   Bots
	kf     KF // nil: kf customers are shown by their ids
	store  Messages
	outbox Outbox
	config func() ConfigReport // the bots' own model keys (keyNames); nil: none
}

type messageRow struct {
	storage.MessageWithReply
	Status    string
	CanResend bool // some part of the reply failed
	// Cause of a failure the panel can say in the admin's language, with
	// a hint (adapter.ParseFailure); "": the reason is shown as stored.
	Cause  string
	Detail string // the error behind Cause
	Hint   string // the dictionary key of Cause's hint (hintKey)
	// HintArg is what Hint's text names: a bot's own model key; "": none.
	HintArg string
	// Customer names a kf customer; nil: the id is shown.
	Customer *adapter.KFCustomer
	// Feedback is the user's verdict on an AI bot's answer (accurate or
	// inaccurate); nil when none is given, or it was withdrawn.
	Feedback *storage.AIBotFeedback
	// Images are the message's stored images that can be shown (the
	// others' reason is the message's).
	Images []storage.MessageMedia
}

// WeCom's feedback types (feedback_event) the panel shows; 3, the user
// cancelling the verdict, shows as none.
const (
	feedbackAccurate   = 1
	feedbackInaccurate = 2
)

type messagesData struct {
	Bot, User, Status string
	BotNames          []string
	Statuses          []string
	Messages          []messageRow
	Back              string // this page, for the re-send form to return to
	Older             string // the next page's URL
}

func (h *messageHandler) list(c *gin.Context) {
	data := messagesData{
		Bot: c.Query("bot"), User: c.Query("user"), Status: c.Query("status"),
		Statuses: []string{statusAnswered, statusFailed, statusPending, statusIgnored},
	}
	states := statesOf(data.Status)
	if states == nil {
		data.Status = ""
	}
	data.BotNames = botNames(h.bots)
	before, _ := strconv.ParseInt(c.Query("before"), 10, 64)
	msgs, err := h.store.LatestMessages(c.Request.Context(), storage.MessageFilter{
		Bot: data.Bot, UserID: data.User, States: states, BeforeID: before, Limit: messagesShown,
	})
	if err != nil {
		h.render.fail(c, err)
		return
	}
	if data.Messages, err = h.rows(c.Request.Context(), msgs); err != nil {
		h.render.fail(c, err)
		return
	}
	q := url.Values{}
	for k, v := range map[string]string{"bot": data.Bot, "user": data.User, "status": data.Status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	data.Back = "/admin/messages?" + q.Encode()
	if len(msgs) == messagesShown {
		q.Set("before", strconv.FormatInt(msgs[len(msgs)-1].ID, 10))
		data.Older = "/admin/messages?" + q.Encode()
	}
	h.render.page(c, http.StatusOK, "messages", data)
}

// rows are msgs as the page shows them.
func (h *messageHandler) rows(ctx context.Context, msgs []storage.MessageWithReply) ([]messageRow, error) {
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	streams, err := h.store.AIBotStreamsOf(ctx, ids)
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	for _, m := range msgs {
		users[m.Bot] = append(users[m.Bot], m.UserID)
	}
	names := customersOf(ctx, h.kf, users)
	media, err := h.store.MediaOf(ctx, ids)
	if err != nil {
		return nil, err
	}
	// The bots' own key names come with the whole configuration report:
	// read only when a bad key's hint names one.
	var keys map[string]string
	var rows []messageRow
	for _, m := range msgs {
		row := messageRow{MessageWithReply: m, Status: statusOfState(m.State), Customer: customer(names, m.Bot, m.UserID)}
		if f := streams[m.ID].Feedback; f.Type == feedbackAccurate || f.Type == feedbackInaccurate {
			row.Feedback = &f
		}
		if m.Error != "" {
			row.Cause, row.Detail = adapter.ParseFailure(m.Error)
			if row.Cause == llm.CauseBadKey && keys == nil {
				keys = keyNames(h.config)
			}
			row.Hint, row.HintArg = hintOf(row.Cause, row.Detail, keys[m.Bot])
		}
		for _, img := range media[m.ID] {
			if img.Reason == "" {
				row.Images = append(row.Images, img)
			}
		}
		for _, p := range m.Parts {
			if p.State == storage.OutboxFailed {
				row.CanResend = true
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// fragment answers the rows of the messages ?ids=3,7 (at most a page's) as
// the Messages page shows them, for app.js to replace its pending rows
// with until they are final. ?back is the page the re-send forms return to.
func (h *messageHandler) fragment(c *gin.Context) {
	var ids []int64
	for _, s := range strings.Split(c.Query("ids"), ",") {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 || len(ids) == messagesShown {
			h.render.fail(c, invalid("bad_message_id"))
			return
		}
		ids = append(ids, id)
	}
	msgs, err := h.store.LatestMessages(c.Request.Context(), storage.MessageFilter{IDs: ids})
	if err != nil {
		h.render.fail(c, err)
		return
	}
	data := messagesData{Back: c.Query("back")}
	if !strings.HasPrefix(data.Back, "/admin/messages") {
		data.Back = "/admin/messages"
	}
	if data.Messages, err = h.rows(c.Request.Context(), msgs); err != nil {
		h.render.fail(c, err)
		return
	}
	h.render.fragment(c, "messages", "rows", data)
}

// resend puts the failed parts of a message's answer back in the outbox.
func (h *messageHandler) resend(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		h.render.fail(c, invalid("bad_message_id"))
		return
	}
	if err := h.outbox.Resend(c.Request.Context(), id); err != nil {
		h.render.fail(c, err)
		return
	}
	redirect(c, c.PostForm("back"), "/admin/messages", "resent")
}

// hintOf is hintKey for a message of a bot whose model key is set at
// keyName ("": llm.api_key), and what the hint's text names.
func hintOf(cause, detail, keyName string) (key, arg string) {
	if cause == llm.CauseBadKey && keyName != "" {
		return "cause_hint.bad_key_of", keyName
	}
	return hintKey(cause, detail), ""
}

// keyNames are the bots that set their own model key, and where (Config
// report's Models); none without a report.
func keyNames(config func() ConfigReport) map[string]string {
	out := map[string]string{}
	if config == nil {
		return out
	}
	for _, m := range config().Models {
		if m.KeyName != "" {
			out[m.Bot] = m.KeyName
		}
	}
	return out
}

// hintKey is the dictionary key of the hint of a failure's cause: a kf
// answer WeCom could not deliver has one per fail_type it explains.
func hintKey(cause, detail string) string {
	if cause == adapter.FailureKFUndelivered {
		if t, ok := adapter.KFFailType(detail); ok && slices.Contains(kfFailTypes, t) {
			return "kf_fail_type." + strconv.Itoa(t)
		}
	}
	return "cause_hint." + cause
}

// kfFailTypes are the msg_send_fail fail_types the dictionaries explain
// (KF.md §4); the others get the cause's general hint.
var kfFailTypes = []int{0, 1, 2, 4, 5, 6, 10}

// image answers a user's stored image (/admin/messages/{id}/image/{seq}),
// behind the login like every page: one of the four image types the
// pipeline accepts, sniffed from its bytes when it was stored.
func (h *messageHandler) image(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	seq, err2 := strconv.Atoi(c.Param("seq"))
	if err != nil || err2 != nil || id <= 0 || seq < 0 {
		h.render.fail(c, invalid("bad_message_id"))
		return
	}
	media, err := h.store.MessageMedia(c.Request.Context(), id, true)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	for _, m := range media {
		if m.Seq == seq && m.Reason == "" && len(m.Data) > 0 {
			c.Header("Cache-Control", "private, max-age=86400")
			c.Header("X-Content-Type-Options", "nosniff")
			c.Header("Content-Security-Policy", "default-src 'none'")
			c.Data(http.StatusOK, m.MIME, m.Data)
			return
		}
	}
	h.render.fail(c, storage.ErrNotFound)
}
