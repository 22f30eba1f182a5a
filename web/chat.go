package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
)

const (
	// chatTimeout is how long the chat page waits for an answer: long
	// enough for a slow model, and the page extends its write deadline past
	// it (the server's own is shorter).
	chatTimeout = 60 * time.Second
	// chatsKept is how many exchanges the page keeps per login session.
	chatsKept = 10
	// chatMaxFailures caps "fail the next N message/send calls": enough to
	// exhaust a few retries, too few to leave the simulator failing for long.
	chatMaxFailures = 20
	// chatGroup is the group chat the page talks in as an AI bot user.
	chatGroup = "wrdemogroup"
	// chatKFPrefix starts the page's target for a 微信客服 account,
	// "kf:<open_kfid>", beside the bots' names (which have no colon).
	chatKFPrefix = "kf:"
)

// What a 微信客服 exchange plays instead of the customer writing
// (ChatRequest.KFAction).
const (
	// ChatKFTakeOver: a receptionist takes the conversation over.
	ChatKFTakeOver = "kf_take_over"
	// ChatKFEnd: the receptionist ends the conversation.
	ChatKFEnd = "kf_end"
)

// ErrChatUnsupported is a Simulator's answer to what its simulator cannot
// do (fail the sends of a simulator in another process, or play a 微信客服
// customer there).
var ErrChatUnsupported = errors.New("web: not supported by this simulator")

// Simulator plays WeCom for a user of a bot (demo mode, or a service whose
// api_base is the simulator): it sends what the user does as an encrypted,
// signed callback, the way WeCom does, and catches the answer where WeCom
// would receive it (message/send for an app; the passive replies, the
// stream's refreshes and response_url for an AI bot; kf/send_msg and
// kf/send_msg_on_event for a customer of an app's 微信客服 account).
type Simulator interface {
	// Chat waits for the answer until ctx ends, calling update (from the
	// caller's goroutine) each time the trace grows: a part delivered, a
	// stream refreshed. An exchange that got no answer, or whose callback
	// the service refused, is a trace, not an error; an error means the
	// callback could not be sent.
	Chat(ctx context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error)
	// FailSends makes the simulator's message/send refuse the next n calls
	// with a retryable error, so the outbox's retries and the Messages
	// page's Re-send can be seen.
	FailSends(ctx context.Context, n int) error
}

// ChatRequest is what the user does: send Text, or open the chat (Welcome:
// the app's enter_agent, the AI bot's enter_chat event, a 微信客服
// customer's enter_session).
type ChatRequest struct {
	Bot, User, Text string
	// Group is the group chat an AI bot user talks in, @mentioning the bot;
	// "" is the single chat. Apps have no groups.
	Group   string
	Welcome bool
	// KF is a 微信客服 account (open_kfid) of the app Bot: User is a
	// WeChat customer (external_userid) writing to it; "" talks to the bot
	// itself.
	KF string
	// KFAction, with KF, is ChatKFTakeOver or ChatKFEnd instead of the
	// customer's text.
	KFAction string
	// Image, when set, is an image the user sends (a JPEG, PNG, GIF or
	// WebP), with Text as its caption: an AI bot's mixed message; an
	// app's image carries no text.
	Image []byte
}

// chatMaxImage bounds an image sent from the page: the service's own cap.
const chatMaxImage = adapter.MaxImageBytes

// ChatTrace is one exchange, step by step, as WeCom would see it.
type ChatTrace struct {
	// The callback as it went out: where it was posted, the length and
	// first characters of its base64 ciphertext, and its msg_signature.
	Path         string
	CipherLen    int
	CipherPrefix string
	Signature    string
	Encrypted    time.Duration // encrypting, signing and sending the callback
	Status       int           // the service's HTTP answer to the callback
	Answered     time.Duration // from sending the callback to that answer
	// Answer is what the user received as whole messages: an app's parts
	// at message/send, an AI bot's text reply (the welcome); empty when
	// nothing arrived in time.
	Answer []string
	// AIBot marks an AI bot's exchange, whose answer is Stream: its
	// content as of the latest refresh, Refreshes of which WeCom polled,
	// until Finished. Later is what went through response_url afterwards
	// (the part of a long answer beyond the stream's limit).
	AIBot     bool
	Stream    string
	Refreshes int
	Finished  bool
	Later     []string
	// KF marks a 微信客服 exchange: the callback is WeCom's
	// kf_msg_or_event, Pulls counts the kf/sync_msg calls the service made
	// since, and Answer is what reached kf/send_msg (the welcome:
	// kf/send_msg_on_event). NoCode: WeCom gave the entering customer no
	// welcome_code. Human: a receptionist has the conversation, so the bot
	// does not answer.
	KF     bool
	Pulls  int
	NoCode bool
	Human  bool
	// Delivered runs from sending the callback to the last part: the
	// service may send the answer before its 200 reached WeCom.
	Delivered time.Duration
	Total     time.Duration
	// Done is set on the trace Chat returns: nothing more will come.
	Done bool
}

// chatHandler is the panel's "chat as a WeCom user" page. It is routed only
// when a Simulator is wired. GET with format=json is the page's own
// polling: the exchanges as JSON and as the HTML that replaces the log.
type chatHandler struct {
	render   *renderer
	bots     Bots
	sim      Simulator
	sessions *sessions
	now      func() time.Time

	mu      sync.Mutex
	lastID  int
	history map[string][]chatExchange // by session id, oldest first
}

func newChatHandler(r *renderer, bots Bots, sim Simulator, ss *sessions, now func() time.Time) *chatHandler {
	return &chatHandler{render: r, bots: bots, sim: sim, sessions: ss, now: now, history: map[string][]chatExchange{}}
}

// chatExchange is one message typed on the page and what became of it.
type chatExchange struct {
	ID              int
	At              time.Time
	Bot, User, Text string
	Group           string
	Welcome         bool
	KF, KFAction    string
	Image           int // the bytes of the image sent; 0: none
	Trace           ChatTrace
}

type chatData struct {
	Bot, User, Text string
	Chat            string // "" single chat, "group"
	BotNames        []string
	KFTargets       []chatKFTarget
	Error           string // message key
	History         []chatExchange
	Pending         bool // an exchange is still under way
	Timeout         int  // seconds
	MaxFailures     int
}

// chatKFTarget is a 微信客服 account the page can write to as a customer:
// Value is what the form's bot field carries.
type chatKFTarget struct{ Value, Bot, Account string }

// kfTargets are the kf.accounts of the apps with kf.enabled.
func kfTargets(bots Bots) []chatKFTarget {
	var out []chatKFTarget
	for _, b := range bots.Bots() {
		if b.KF != nil {
			for _, a := range b.KF.Accounts {
				out = append(out, chatKFTarget{Value: chatKFPrefix + a, Bot: b.Name, Account: a})
			}
		}
	}
	return out
}

// IsKF tells the form's bot field of a 微信客服 account.
func (d chatData) IsKF() bool { return strings.HasPrefix(d.Bot, chatKFPrefix) }

// chatJSON is the page's polling answer.
type chatJSON struct {
	Pending   bool            `json:"pending"`
	HTML      string          `json:"html"`
	Exchanges []chatJSONEntry `json:"exchanges"`
}

type chatJSONEntry struct {
	ID        int      `json:"id"`
	Bot       string   `json:"bot"`
	User      string   `json:"user"`
	Text      string   `json:"text"`
	Group     string   `json:"group,omitempty"`
	Welcome   bool     `json:"welcome,omitempty"`
	KF        string   `json:"kf,omitempty"`
	KFAction  string   `json:"kf_action,omitempty"`
	Image     int      `json:"image,omitempty"`
	Status    int      `json:"status"`
	Answer    []string `json:"answer"`
	Stream    string   `json:"stream,omitempty"`
	Refreshes int      `json:"refreshes,omitempty"`
	Finished  bool     `json:"finished,omitempty"`
	Later     []string `json:"later,omitempty"`
	Pulls     int      `json:"pulls,omitempty"`
	Human     bool     `json:"human,omitempty"`
	Done      bool     `json:"done"`
}

func (h *chatHandler) form(c *gin.Context) {
	data := chatData{Bot: c.Query("bot"), User: c.Query("user"), Chat: c.Query("chat")}
	if data.User == "" {
		data.User = "demo-user"
	}
	if c.Query("format") == "json" {
		h.showJSON(c, data)
		return
	}
	h.show(c, http.StatusOK, data)
}

func (h *chatHandler) fill(c *gin.Context, data *chatData) {
	data.BotNames = botNames(h.bots)
	data.KFTargets = kfTargets(h.bots)
	data.Timeout = int(chatTimeout.Seconds())
	data.MaxFailures = chatMaxFailures
	h.mu.Lock()
	data.History = slices.Clone(h.history[c.GetString(ctxSession)])
	h.mu.Unlock()
	for _, x := range data.History {
		data.Pending = data.Pending || !x.Trace.Done
	}
}

func (h *chatHandler) show(c *gin.Context, status int, data chatData) {
	h.fill(c, &data)
	h.render.page(c, status, "chat", data)
}

// showJSON answers the page's polling with the exchanges and the log's
// HTML, rendered by the same template as the page.
func (h *chatHandler) showJSON(c *gin.Context, data chatData) {
	h.fill(c, &data)
	var buf bytes.Buffer
	v := view{L: h.render.lang(c), Page: "chat", Data: data}
	if err := h.render.pages["chat"].ExecuteTemplate(&buf, "exchanges", v); err != nil {
		h.render.failJSON(c, err)
		return
	}
	out := chatJSON{Pending: data.Pending, HTML: buf.String(), Exchanges: []chatJSONEntry{}}
	for _, x := range data.History {
		t := x.Trace
		out.Exchanges = append(out.Exchanges, chatJSONEntry{ID: x.ID, Bot: x.Bot, User: x.User, Text: x.Text, Group: x.Group,
			Welcome: x.Welcome, KF: x.KF, KFAction: x.KFAction, Image: x.Image, Status: t.Status, Answer: append([]string{}, t.Answer...), Stream: t.Stream,
			Refreshes: t.Refreshes, Finished: t.Finished, Later: t.Later, Pulls: t.Pulls, Human: t.Human, Done: t.Done})
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

// submit does what the form asks: action "" sends the text as the user,
// "welcome" opens the chat, "fail" makes the next message/send calls
// fail; for a 微信客服 account (bot "kf:<open_kfid>"), ChatKFTakeOver and
// ChatKFEnd play the receptionist. A send waits for the answer, recording
// its progress for the polling page, then redirects to the page (or, for
// the page's script, answers like the polling).
func (h *chatHandler) submit(c *gin.Context) {
	data := chatData{Bot: c.PostForm("bot"), User: strings.TrimSpace(c.PostForm("user")), Text: c.PostForm("text"), Chat: c.PostForm("chat")}
	q := url.Values{"bot": {data.Bot}, "user": {data.User}}
	if data.Chat == "group" {
		q.Set("chat", "group")
	}
	back := "/admin/chat?" + q.Encode()
	action := c.PostForm("action")
	if action == "fail" {
		n, err := strconv.Atoi(c.PostForm("n"))
		if err != nil || n < 1 || n > chatMaxFailures {
			h.refuse(c, data, invalid("chat_fail_n"))
			return
		}
		if err := h.sim.FailSends(c.Request.Context(), n); errors.Is(err, ErrChatUnsupported) {
			h.refuse(c, data, invalid("chat_fail_unsupported"))
			return
		} else if err != nil {
			h.render.fail(c, err)
			return
		}
		redirect(c, back, "/admin/chat", "chat_failing")
		return
	}
	req := ChatRequest{Bot: data.Bot, User: data.User, Text: data.Text, Welcome: action == "welcome"}
	if data.Chat == "group" {
		req.Group = chatGroup
	}
	if action == ChatKFTakeOver || action == ChatKFEnd {
		req.KFAction = action // refused below unless bot is a kf account
	}
	if account, ok := strings.CutPrefix(data.Bot, chatKFPrefix); ok {
		// A customer of a 微信客服 account writes to the app that owns it.
		req.KF, req.Group = account, "" // req.Bot stays unknown unless an app has it
		for _, t := range kfTargets(h.bots) {
			if t.Account == account {
				req.Bot = t.Bot
			}
		}
	}
	img, err := chatImage(c)
	if err != nil {
		h.refuse(c, data, err)
		return
	}
	check := sendData{Bot: req.Bot, User: req.User, Text: req.Text}
	switch {
	case req.Welcome || req.KFAction != "":
		check.Text, req.Text, req.Group = "enter", "", ""
	case img != nil:
		req.Image = img
		if strings.TrimSpace(req.Text) == "" {
			check.Text, req.Text = "image", ""
		}
	}
	err = validateSend(check, false)
	bot, unknown := botOf(h.bots, req.Bot)
	switch {
	case err != nil:
	case req.KFAction != "" && req.KF == "":
		err = invalid("chat_kf_only")
	case unknown != nil:
		err = invalid("chat_unknown_bot")
	case req.Image != nil && (bot.Kind != adapter.KindAIBot || req.KF != "") && req.Text != "":
		err = invalid("chat_image_caption") // an app's or a customer's image carries no text
	}
	if err != nil {
		h.refuse(c, data, err)
		return
	}
	// A slow model may take longer than the server's write timeout.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(chatTimeout + 10*time.Second))
	ctx, cancel := context.WithTimeout(c.Request.Context(), chatTimeout)
	defer cancel()
	session := c.GetString(ctxSession)
	id := h.remember(session, chatExchange{At: h.now(), Bot: req.Bot, User: req.User, Text: req.Text, Group: req.Group,
		Welcome: req.Welcome, KF: req.KF, KFAction: req.KFAction, Image: len(req.Image)})
	trace, err := h.sim.Chat(ctx, req, func(t ChatTrace) { h.update(session, id, t) })
	trace.Done = true
	h.update(session, id, trace)
	if err != nil {
		h.forget(session, id)
		if errors.Is(err, ErrChatUnsupported) {
			key := "chat_image_unsupported"
			if req.KF != "" {
				key = "chat_kf_unsupported"
			}
			h.refuse(c, data, invalid(key))
			return
		}
		if wantsJSON(c) {
			h.render.failJSON(c, err)
		} else {
			h.render.fail(c, err)
		}
		return
	}
	if wantsJSON(c) {
		h.showJSON(c, data)
		return
	}
	redirect(c, back, "/admin/chat", "")
}

// chatImage is the image the form sends (the file of "image"), nil when
// none: at most 10 MB, and a JPEG, PNG, GIF or WebP by its bytes.
func chatImage(c *gin.Context) ([]byte, error) {
	fh, err := c.FormFile("image")
	if errors.Is(err, http.ErrMissingFile) || errors.Is(err, http.ErrNotMultipart) {
		return nil, nil
	}
	if err != nil {
		return nil, invalid("chat_image_bad")
	}
	if fh.Size == 0 {
		return nil, nil // the file input left empty
	}
	if fh.Size > chatMaxImage {
		return nil, invalid("chat_image_too_large")
	}
	f, err := fh.Open()
	if err != nil {
		return nil, invalid("chat_image_bad")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, chatMaxImage+1))
	if err != nil || len(data) > chatMaxImage {
		return nil, invalid("chat_image_too_large")
	}
	if _, ok := adapter.ImageType(data); ok {
		return data, nil
	}
	return nil, invalid("chat_image_bad")
}

// refuse shows the form again with the problem, or, for the page's
// script, the problem in its language.
func (h *chatHandler) refuse(c *gin.Context, data chatData, err error) {
	status, key := statusOf(err)
	if wantsJSON(c) {
		c.AbortWithStatusJSON(status, gin.H{"error": h.render.lang(c).T(key)})
		return
	}
	data.Error = key
	h.show(c, status, data)
}

// wantsJSON tells the page's script from a plain form post.
func wantsJSON(c *gin.Context) bool {
	return strings.Contains(c.GetHeader("Accept"), "application/json")
}

// remember appends x to the session's history, keeping the last few, and
// forgets the histories of sessions that ended. It returns x's id.
func (h *chatHandler) remember(session string, x chatExchange) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.history {
		if id != session && !h.sessions.valid(id) {
			delete(h.history, id)
		}
	}
	h.lastID++
	x.ID = h.lastID
	kept := append(h.history[session], x)
	h.history[session] = kept[max(0, len(kept)-chatsKept):]
	return x.ID
}

// update replaces the trace of exchange id, if the session still keeps it.
func (h *chatHandler) update(session string, id int, t ChatTrace) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.history[session] {
		if x.ID == id {
			h.history[session][i].Trace = t
		}
	}
}

// forget drops exchange id: its callback could not be sent.
func (h *chatHandler) forget(session string, id int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.history[session] = slices.DeleteFunc(h.history[session], func(x chatExchange) bool { return x.ID == id })
}
