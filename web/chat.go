package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

const (
	// chatTimeout is how long the chat page waits for an answer: long
	// enough for a slow model, and the page extends its write deadline past
	// it (the server's own is shorter).
	chatTimeout = 60 * time.Second
	// chatsKept is how many exchanges the page keeps per login session.
	chatsKept = 10
)

// Simulator plays WeCom for a user of a bot (demo mode, or a service whose
// api_base is the simulator): it sends text as an encrypted, signed
// callback, the way WeCom does, and catches the answer where WeCom would
// receive it (message/send).
type Simulator interface {
	// Chat waits for the answer until ctx ends. An exchange that got no
	// answer, or whose callback the service refused, is a trace, not an
	// error; an error means the callback could not be sent.
	Chat(ctx context.Context, bot, user, text string) (ChatTrace, error)
}

// ChatTrace is one exchange, step by step, as WeCom would see it.
type ChatTrace struct {
	// The callback as it went out: where it was posted, the length and
	// first characters of its base64 <Encrypt>, and its msg_signature.
	Path         string
	CipherLen    int
	CipherPrefix string
	Signature    string
	Encrypted    time.Duration // encrypting, signing and sending the callback
	Status       int           // the service's HTTP answer to the callback
	Answered     time.Duration // from sending the callback to that answer
	// Answer is what the user received at message/send, part by part;
	// empty when nothing arrived in time.
	Answer []string
	// Delivered runs from sending the callback to the last part: the
	// service may send the answer before its 200 reached WeCom.
	Delivered time.Duration
	Total     time.Duration
}

// chatHandler is the panel's "chat as a WeCom user" page. It is routed only
// when a Simulator is wired.
type chatHandler struct {
	render   *renderer
	bots     Bots
	sim      Simulator
	sessions *sessions
	now      func() time.Time

	mu      sync.Mutex
	history map[string][]chatExchange // by session id, newest first
}

func newChatHandler(r *renderer, bots Bots, sim Simulator, ss *sessions, now func() time.Time) *chatHandler {
	return &chatHandler{render: r, bots: bots, sim: sim, sessions: ss, now: now, history: map[string][]chatExchange{}}
}

// chatExchange is one message typed on the page and what became of it.
type chatExchange struct {
	At              time.Time
	Bot, User, Text string
	Trace           ChatTrace
}

type chatData struct {
	Bot, User, Text string
	BotNames        []string
	Error           string // message key
	History         []chatExchange
	Timeout         int // seconds
}

func (h *chatHandler) form(c *gin.Context) {
	data := chatData{Bot: c.Query("bot"), User: c.Query("user")}
	if data.User == "" {
		data.User = "demo-user"
	}
	h.show(c, http.StatusOK, data)
}

func (h *chatHandler) show(c *gin.Context, status int, data chatData) {
	data.BotNames = botNames(h.bots)
	data.Timeout = int(chatTimeout.Seconds())
	h.mu.Lock()
	data.History = slices.Clone(h.history[c.GetString(ctxSession)])
	h.mu.Unlock()
	h.render.page(c, status, "chat", data)
}

// submit sends the text as the user, waits for the answer and shows the
// trace on the page it redirects to.
func (h *chatHandler) submit(c *gin.Context) {
	data := chatData{Bot: c.PostForm("bot"), User: strings.TrimSpace(c.PostForm("user")), Text: c.PostForm("text")}
	err := validateSend(sendData{Bot: data.Bot, User: data.User, Text: data.Text}, false)
	if err == nil && knownBot(h.bots, data.Bot) != nil {
		err = invalid("chat_unknown_bot")
	}
	if err != nil {
		_, data.Error = statusOf(err)
		h.show(c, http.StatusBadRequest, data)
		return
	}
	// A slow model may take longer than the server's write timeout.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(chatTimeout + 10*time.Second))
	ctx, cancel := context.WithTimeout(c.Request.Context(), chatTimeout)
	defer cancel()
	at := h.now()
	trace, err := h.sim.Chat(ctx, data.Bot, data.User, data.Text)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	h.remember(c.GetString(ctxSession), chatExchange{At: at, Bot: data.Bot, User: data.User, Text: data.Text, Trace: trace})
	q := url.Values{"bot": {data.Bot}, "user": {data.User}}
	redirect(c, "/admin/chat?"+q.Encode(), "/admin/chat", "")
}

// remember keeps x first in the session's history and forgets the
// histories of sessions that ended.
func (h *chatHandler) remember(session string, x chatExchange) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.history {
		if id != session && !h.sessions.valid(id) {
			delete(h.history, id)
		}
	}
	kept := append([]chatExchange{x}, h.history[session]...)
	h.history[session] = kept[:min(len(kept), chatsKept)]
}
