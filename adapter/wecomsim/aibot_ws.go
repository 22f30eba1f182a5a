package wecomsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// The long connection (长连接): the service dials AIBotWSPath, subscribes
// with bot_id and secret, and from then on the simulator pushes callbacks as
// frames and acks every command by req_id with a frame that has no cmd.

const (
	wsWriteTimeout = 5 * time.Second
	wsReadLimit    = 4 << 20 // media chunks are 512 KB before base64
	// streamLifetime is how long a stream accepts frames, counted from its
	// first frame ("从首次发送开始计时").
	streamLifetime = 6 * time.Minute
	// replyWindow is how long after a callback its req_id takes replies.
	replyWindow = 24 * time.Hour
	// welcomeWithin is how soon enter_chat must be welcomed.
	welcomeWithin = 5 * time.Second
)

// AIBotFrame is one frame the simulator received on a long connection.
type AIBotFrame struct {
	Conn    int    // the connection's number, in order of opening
	BotID   string // "" before the connection subscribed
	Cmd     string
	ReqID   string
	Body    json.RawMessage
	At      time.Time
	ErrCode int  // the ack's errcode
	Acked   bool // false while the ack is withheld, or for frames without a req_id
}

// AIBotConn describes a bot's current connection.
type AIBotConn struct {
	ID     int
	Since  time.Time // when it subscribed
	Remote string
}

// AIBotStream is what the simulator made of the aibot_respond_msg frames for
// one req_id: what the user sees.
type AIBotStream struct {
	ReqID        string
	StreamID     string
	Content      string // the last accepted content
	Frames       int    // accepted aibot_respond_msg frames
	FinishFrames int    // how many of them had finish:true; exactly 1 for a well-ended stream
	FeedbackID   string // from the first frame, the only one WeCom honours
	MsgType      string // of the last frame: "stream", "markdown", "template_card"…
}

type aibotState struct {
	secrets map[string]string // bot id -> long-connection secret
	codes   map[string]*responseCode
	// responses lists every response_url call.
	responses []AIBotResponse
	changed   chan struct{}

	nextConn    int
	conns       map[string]*aibotConn // current connection per bot
	subscribes  map[string]int        // successful subscribes per bot
	frames      []AIBotFrame
	reqs        map[string]*aibotReq       // req_ids the simulator issued
	chats       map[string]map[string]bool // bot id -> chats that wrote to it
	pushes      []AIBotFrame               // aibot_send_msg frames accepted
	violations  []error
	ackDelay    time.Duration
	withhold    map[string]bool
	withheld    map[string][]withheldAck
	expireAfter map[string]int // req_id -> frames accepted before 846608
}

func newAIBotState(bots []AIBot) *aibotState {
	st := &aibotState{
		secrets:     make(map[string]string, len(bots)),
		codes:       make(map[string]*responseCode),
		changed:     make(chan struct{}),
		conns:       make(map[string]*aibotConn),
		subscribes:  make(map[string]int),
		reqs:        make(map[string]*aibotReq),
		chats:       make(map[string]map[string]bool),
		withhold:    make(map[string]bool),
		withheld:    make(map[string][]withheldAck),
		expireAfter: make(map[string]int),
	}
	for _, b := range bots {
		st.secrets[b.BotID] = b.Secret
	}
	return st
}

// aibotReq is a callback the simulator delivered, under its req_id.
type aibotReq struct {
	botID      string
	cmd        string // aibot_msg_callback or aibot_event_callback
	body       AIBotBody
	at         time.Time // when it was delivered
	stream     AIBotStream
	firstFrame time.Time
	welcomed   bool
}

type withheldAck struct {
	conn  *aibotConn
	frame int // index in frames
	ack   wsAck
}

type aibotConn struct {
	id      int
	c       *websocket.Conn
	botID   string // set on subscribe
	since   time.Time
	remote  string
	base    string         // the simulator's base URL as this client reached it, for response_url
	closing sync.WaitGroup // the kick goroutine, waited for by the connection's handler
}

type wsFrame struct {
	Cmd     string          `json:"cmd,omitempty"`
	Headers wsHeaders       `json:"headers"`
	Body    json.RawMessage `json:"body,omitempty"`
}

type wsHeaders struct {
	ReqID string `json:"req_id"`
}

// wsAck is WeCom's answer to every command: no cmd, the command's req_id.
type wsAck struct {
	Headers wsHeaders `json:"headers"`
	ErrCode int       `json:"errcode"`
	ErrMsg  string    `json:"errmsg"`
}

type wsPush struct {
	Cmd     string    `json:"cmd"`
	Headers wsHeaders `json:"headers"`
	Body    any       `json:"body"`
}

func (s *Server) serveAIBotWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the client
	}
	c.SetReadLimit(wsReadLimit)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	conn := &aibotConn{c: c, remote: r.RemoteAddr,
		base: scheme + "://" + r.Host + strings.TrimSuffix(r.URL.Path, AIBotWSPath)}
	s.mu.Lock()
	s.ai.nextConn++
	conn.id = s.ai.nextConn
	s.mu.Unlock()

	// The hijacked connection outlives r's context; the connection's own
	// context ends when its handler does.
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		_ = c.CloseNow()
		s.mu.Lock()
		if conn.botID != "" && s.ai.conns[conn.botID] == conn {
			delete(s.ai.conns, conn.botID)
		}
		s.changedLocked()
		s.mu.Unlock()
		conn.closing.Wait()
	}()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		s.handleFrame(ctx, conn, data)
	}
}

// handleFrame records one frame, acts on it and acks it.
func (s *Server) handleFrame(ctx context.Context, conn *aibotConn, data []byte) {
	var f wsFrame
	if err := json.Unmarshal(data, &f); err != nil {
		s.mu.Lock()
		s.ai.violations = append(s.ai.violations, fmt.Errorf("conn %d: frame is not JSON: %q", conn.id, truncate(data)))
		s.changedLocked()
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	rec := AIBotFrame{Conn: conn.id, BotID: conn.botID, Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: f.Body, At: s.now()}
	code, msg := s.actLocked(conn, f, rec.At)
	rec.ErrCode = code
	ack := wsAck{Headers: wsHeaders{ReqID: f.Headers.ReqID}, ErrCode: code, ErrMsg: msg}
	withhold := conn.botID != "" && s.ai.withhold[conn.botID] && f.Cmd != "aibot_subscribe"
	rec.Acked = !withhold && f.Headers.ReqID != ""
	s.ai.frames = append(s.ai.frames, rec)
	if withhold && f.Headers.ReqID != "" {
		s.ai.withheld[conn.botID] = append(s.ai.withheld[conn.botID], withheldAck{conn: conn, frame: len(s.ai.frames) - 1, ack: ack})
	}
	delay := s.ai.ackDelay
	s.changedLocked()
	s.mu.Unlock()

	if !rec.Acked {
		if f.Headers.ReqID == "" && !withhold {
			s.violation(fmt.Errorf("conn %d: %s frame without headers.req_id", conn.id, f.Cmd))
		}
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	_ = conn.write(ctx, ack) // a failed write means the connection is gone
}

func (s *Server) violation(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ai.violations = append(s.ai.violations, err)
	s.changedLocked()
}

// actLocked carries out one command and returns the ack's errcode and
// errmsg. s.mu must be held.
func (s *Server) actLocked(conn *aibotConn, f wsFrame, now time.Time) (int, string) {
	if f.Cmd == "ping" {
		return 0, "ok"
	}
	if f.Cmd == "aibot_subscribe" {
		return s.subscribeLocked(conn, f, now)
	}
	if conn.botID == "" || s.ai.conns[conn.botID] != conn {
		return AIBotErrBadRequest, "not subscribed"
	}
	switch f.Cmd {
	case "aibot_respond_msg":
		return s.respondLocked(conn, f, now)
	case "aibot_respond_welcome_msg":
		req := s.ai.reqs[f.Headers.ReqID]
		if req == nil || req.botID != conn.botID || req.body.eventType() != "enter_chat" {
			return AIBotErrInvalidReqID, "invalid req_id"
		}
		if req.welcomed {
			s.ai.violations = append(s.ai.violations, fmt.Errorf("req_id %s: a second welcome", f.Headers.ReqID))
		}
		if late := now.Sub(req.at); late > welcomeWithin {
			s.ai.violations = append(s.ai.violations, fmt.Errorf("req_id %s: welcome %v after enter_chat, over %v", f.Headers.ReqID, late, welcomeWithin))
		}
		req.welcomed = true
		return 0, "ok"
	case "aibot_respond_update_msg":
		req := s.ai.reqs[f.Headers.ReqID]
		if req == nil || req.botID != conn.botID || req.body.eventType() != "template_card_event" {
			return AIBotErrInvalidReqID, "invalid req_id"
		}
		return 0, "ok"
	case "aibot_send_msg":
		var b struct {
			ChatID   string `json:"chatid"`
			MsgType  string `json:"msgtype"`
			Markdown *struct {
				Content string `json:"content"`
			} `json:"markdown"`
		}
		if err := json.Unmarshal(f.Body, &b); err != nil || b.ChatID == "" || b.MsgType == "" {
			return AIBotErrBadRequest, "invalid body"
		}
		if !s.ai.chats[conn.botID][b.ChatID] {
			s.ai.violations = append(s.ai.violations, fmt.Errorf("bot %s: aibot_send_msg to %s, which never wrote to the bot", conn.botID, b.ChatID))
			return AIBotErrNoConversation, "no conversation with this chat"
		}
		if b.Markdown != nil && len(b.Markdown.Content) > AIBotMaxContentBytes {
			return AIBotErrContentTooLong, "content exceed max length"
		}
		s.ai.pushes = append(s.ai.pushes, AIBotFrame{Conn: conn.id, BotID: conn.botID, Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: f.Body, At: now, Acked: true})
		return 0, "ok"
	}
	return AIBotErrBadRequest, "unsupported cmd"
}

func (s *Server) subscribeLocked(conn *aibotConn, f wsFrame, now time.Time) (int, string) {
	var b struct {
		BotID  string `json:"bot_id"`
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(f.Body, &b) // a malformed body fails the check below
	secret, ok := s.ai.secrets[b.BotID]
	if !ok || b.BotID == "" || secret != b.Secret {
		return AIBotErrInvalidSecret, "invalid bot_id or secret"
	}
	if old := s.ai.conns[b.BotID]; old != nil && old != conn {
		old.closing.Add(1)
		go s.kick(old, b.BotID)
	}
	conn.botID, conn.since = b.BotID, now
	s.ai.conns[b.BotID] = conn
	s.ai.subscribes[b.BotID]++
	return 0, "ok"
}

// kick tells old that another connection took the bot, then closes it, as
// WeCom does: the event first, then a close from the server's side.
func (s *Server) kick(old *aibotConn, botID string) {
	defer old.closing.Done()
	s.mu.Lock()
	now := s.now()
	s.mu.Unlock()
	body := map[string]any{"msgid": "CAIQ" + randomString(18), "create_time": now.Unix(), "aibotid": botID,
		"msgtype": "event", "event": map[string]any{"eventtype": "disconnected_event"}}
	ctx, cancel := context.WithTimeout(context.Background(), wsWriteTimeout)
	defer cancel()
	_ = old.write(ctx, wsPush{Cmd: "aibot_event_callback", Headers: wsHeaders{ReqID: newReqID("aibot_event_callback")}, Body: body})
	_ = old.c.Close(websocket.StatusNormalClosure, "another connection subscribed this bot")
}

// respondLocked records one aibot_respond_msg frame. s.mu must be held.
func (s *Server) respondLocked(conn *aibotConn, f wsFrame, now time.Time) (int, string) {
	req := s.ai.reqs[f.Headers.ReqID]
	if req == nil || req.botID != conn.botID || req.cmd != "aibot_msg_callback" || now.Sub(req.at) > replyWindow {
		return AIBotErrInvalidReqID, "invalid req_id"
	}
	var b aibotReplyBody
	if err := json.Unmarshal(f.Body, &b); err != nil || b.MsgType == "" {
		return AIBotErrBadRequest, "invalid body"
	}
	st := &req.stream
	limit, ok := s.ai.expireAfter[f.Headers.ReqID]
	if (ok && st.Frames >= limit) || (st.Frames > 0 && now.Sub(req.firstFrame) > streamLifetime) {
		return AIBotErrStreamExpired, "stream message update expired (>6 minutes), cannot update"
	}
	bad := func(format string, args ...any) {
		s.ai.violations = append(s.ai.violations, fmt.Errorf("req_id %s: "+format, append([]any{f.Headers.ReqID}, args...)...))
	}
	switch {
	case b.MsgType == "stream" && b.Stream != nil:
		if len(b.Stream.Content) > AIBotMaxContentBytes {
			bad("stream content of %d bytes", len(b.Stream.Content))
			return AIBotErrContentTooLong, "content exceed max length"
		}
		if b.Stream.ID == "" {
			bad("stream frame without stream.id")
		}
		if st.StreamID != "" && b.Stream.ID != st.StreamID {
			bad("stream.id changed from %q to %q", st.StreamID, b.Stream.ID)
		}
		if st.FinishFrames > 0 {
			bad("stream frame after finish")
		}
		if !strings.HasPrefix(b.Stream.Content, st.Content) {
			bad("content is not cumulative: %q after %q", truncate([]byte(b.Stream.Content)), truncate([]byte(st.Content)))
		}
		if st.Frames == 0 && b.Stream.Feedback != nil {
			st.FeedbackID = b.Stream.Feedback.ID
		}
		if st.StreamID == "" {
			st.StreamID = b.Stream.ID
		}
		st.Content = b.Stream.Content
		if b.Stream.Finish {
			st.FinishFrames++
		}
	case b.MsgType == "markdown" && b.Markdown != nil:
		if len(b.Markdown.Content) > AIBotMaxContentBytes {
			return AIBotErrContentTooLong, "content exceed max length"
		}
		st.Content = b.Markdown.Content
	case b.MsgType == "stream" || b.MsgType == "markdown":
		return AIBotErrBadRequest, "invalid body"
	}
	if st.Frames == 0 {
		req.firstFrame = now
	}
	st.ReqID = f.Headers.ReqID
	st.MsgType = b.MsgType
	st.Frames++
	return 0, "ok"
}

func (c *aibotConn) write(ctx context.Context, v any) error {
	ctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
	defer cancel()
	return wsjson.Write(ctx, c.c, v)
}

// newReqID makes req_ids the way WeCom's SDK does: prefix_ms_8hex.
func newReqID(prefix string) string {
	return fmt.Sprintf("%s_%d_%s", prefix, time.Now().UnixMilli(), randomHex(4))
}

func truncate(b []byte) string {
	const n = 200
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// ErrNotConnected is returned when a bot has no subscribed connection.
var ErrNotConnected = errors.New("wecomsim: the AI bot has no long connection")

// DeliverMessage pushes body to botID's current connection as WeCom does,
// under a new req_id it returns: aibot_event_callback for events,
// aibot_msg_callback otherwise. An empty AIBotID becomes botID; a message
// without response_url gets a fresh one pointing at the simulator. The
// sender's chat may then receive aibot_send_msg.
func (s *Server) DeliverMessage(ctx context.Context, botID string, body AIBotBody) (string, error) {
	s.mu.Lock()
	conn := s.ai.conns[botID]
	s.mu.Unlock()
	if conn == nil {
		return "", ErrNotConnected
	}
	if body.AIBotID == "" {
		body.AIBotID = botID
	}
	cmd := "aibot_msg_callback"
	if body.MsgType == "event" {
		cmd = "aibot_event_callback"
	}
	if body.ResponseURL == "" && (cmd == "aibot_msg_callback" || body.eventType() == "template_card_event") {
		body.ResponseURL = s.IssueResponseURL(conn.base, botID, body.MsgID)
	}
	return s.push(ctx, conn, cmd, body)
}

func (s *Server) push(ctx context.Context, conn *aibotConn, cmd string, body AIBotBody) (string, error) {
	reqID := newReqID(cmd)
	s.mu.Lock()
	botID := conn.botID
	s.ai.reqs[reqID] = &aibotReq{botID: botID, cmd: cmd, body: body, at: s.now()}
	if cmd == "aibot_msg_callback" {
		chats := s.ai.chats[botID]
		if chats == nil {
			chats = make(map[string]bool)
			s.ai.chats[botID] = chats
		}
		chats[body.chatKey()] = true
	}
	s.mu.Unlock()
	if err := conn.write(ctx, wsPush{Cmd: cmd, Headers: wsHeaders{ReqID: reqID}, Body: body}); err != nil {
		return reqID, fmt.Errorf("wecomsim: deliver to AI bot %s: %w", botID, err)
	}
	return reqID, nil
}

// EnterChat delivers the enter_chat event from userID and returns its req_id.
func (s *Server) EnterChat(ctx context.Context, botID, userID string) (string, error) {
	s.mu.Lock()
	now := s.now()
	s.mu.Unlock()
	return s.DeliverMessage(ctx, botID, AIBotEnterChat(botID, userID, now))
}

// Feedback delivers a feedback_event from userID on the reply that set
// feedbackID (typ 1 accurate, 2 inaccurate, 3 cancel) and returns its req_id.
func (s *Server) Feedback(ctx context.Context, botID, userID, feedbackID string, typ int, reasons ...int) (string, error) {
	s.mu.Lock()
	now := s.now()
	s.mu.Unlock()
	return s.DeliverMessage(ctx, botID, AIBotFeedback(botID, userID, feedbackID, typ, "", reasons, now))
}

// Redeliver pushes the body delivered under reqID again, as WeCom does after
// a reconnect: same body and msgid, a new req_id, on the bot's current
// connection.
func (s *Server) Redeliver(ctx context.Context, reqID string) (string, error) {
	s.mu.Lock()
	req := s.ai.reqs[reqID]
	var conn *aibotConn
	if req != nil {
		conn = s.ai.conns[req.botID]
	}
	s.mu.Unlock()
	if req == nil {
		return "", fmt.Errorf("wecomsim: redeliver: unknown req_id %q", reqID)
	}
	if conn == nil {
		return "", ErrNotConnected
	}
	return s.push(ctx, conn, req.cmd, req.body)
}

// Drop closes botID's connection abruptly, without a close frame, as a
// network failure would. It reports whether there was one.
func (s *Server) Drop(botID string) bool {
	s.mu.Lock()
	conn := s.ai.conns[botID]
	delete(s.ai.conns, botID)
	s.changedLocked()
	s.mu.Unlock()
	if conn == nil {
		return false
	}
	_ = conn.c.CloseNow()
	return true
}

// SetAckDelay delays every ack by d of real time, so a service's 5 s ack
// timeout and per-req_id queueing can be exercised against a slow WeCom.
func (s *Server) SetAckDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ai.ackDelay = d
}

// WithholdAcks makes botID's commands go unacknowledged until ReleaseAcks;
// they are still carried out and recorded.
func (s *Server) WithholdAcks(botID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ai.withhold[botID] = true
}

// ReleaseAcks stops withholding botID's acks and sends the withheld ones in
// order, each on the connection its command came from if still open. It
// returns how many it sent.
func (s *Server) ReleaseAcks(ctx context.Context, botID string) int {
	s.mu.Lock()
	delete(s.ai.withhold, botID)
	pending := s.ai.withheld[botID]
	delete(s.ai.withheld, botID)
	for _, p := range pending {
		s.ai.frames[p.frame].Acked = true
	}
	s.changedLocked()
	s.mu.Unlock()
	sent := 0
	for _, p := range pending {
		if p.conn.write(ctx, p.ack) == nil {
			sent++
		}
	}
	return sent
}

// ExpireStream makes aibot_respond_msg frames for reqID answer 846608 once
// n of them were accepted, as WeCom does when a stream outlives its window.
func (s *Server) ExpireStream(reqID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ai.expireAfter[reqID] = n
}

// AIBotConnection returns botID's current connection.
func (s *Server) AIBotConnection(botID string) (AIBotConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ai.conns[botID]
	if c == nil {
		return AIBotConn{}, false
	}
	return AIBotConn{ID: c.id, Since: c.since, Remote: c.remote}, true
}

// AIBotSubscribes counts botID's successful subscribes.
func (s *Server) AIBotSubscribes(botID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ai.subscribes[botID]
}

// AIBotFrames returns every frame received on any long connection, in
// arrival order; cmd "" returns all, otherwise those with that cmd.
func (s *Server) AIBotFrames(cmd string) []AIBotFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AIBotFrame
	for _, f := range s.ai.frames {
		if cmd == "" || f.Cmd == cmd {
			out = append(out, f)
		}
	}
	return out
}

// AIBotStreamOf returns what the aibot_respond_msg frames for reqID showed
// the user so far; false if the simulator never issued reqID.
func (s *Server) AIBotStreamOf(reqID string) (AIBotStream, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.ai.reqs[reqID]
	if req == nil {
		return AIBotStream{}, false
	}
	st := req.stream
	st.ReqID = reqID
	return st, true
}

// AIBotWelcomed reports whether the enter_chat under reqID got a welcome.
func (s *Server) AIBotWelcomed(reqID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.ai.reqs[reqID]
	return req != nil && req.welcomed
}

// AIBotPushes returns the accepted aibot_send_msg frames, in arrival order.
func (s *Server) AIBotPushes() []AIBotFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AIBotFrame(nil), s.ai.pushes...)
}

// AIBotViolations returns the protocol breaches the simulator saw on long
// connections: content that shrank or was rewritten, frames after finish, a
// changed stream id, a second or late (over 5 s) welcome, a push to a chat
// that never wrote, frames that are not JSON or lack a req_id. A correct
// service leaves it empty.
func (s *Server) AIBotViolations() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.ai.violations...)
}
