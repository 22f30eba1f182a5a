package aibot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/coder/websocket"
	"github.com/jonboulle/clockwork"
)

// DefaultURL is WeCom's long-connection endpoint.
const DefaultURL = "wss://openws.work.weixin.qq.com"

// The timing rules of the long connection (AIBOT.md §3).
const (
	// pingInterval spaces our ping commands; a link that misses
	// maxMissedPings acks in a row is dead.
	pingInterval   = 30 * time.Second
	maxMissedPings = 2
	// subscribeTimeout bounds the dial and, separately, the wait for the
	// subscribe ack.
	subscribeTimeout = 10 * time.Second
	// ackTimeout is how long a frame of a reply holds its req_id before the
	// next frame of that req_id goes anyway.
	ackTimeout = 5 * time.Second
	// readLimit is above the largest frame WeCom sends (a 20,480-byte
	// text with JSON escapes and the envelope); the library's default of
	// 32 KiB is not.
	readLimit = 1 << 20
)

// State is where the long connection stands, as the panel shows it.
type State string

const (
	// StateConnecting: dialling, subscribing, or waiting to retry after a
	// transient failure.
	StateConnecting State = "connecting"
	// StateConnected: subscribed; frames flow.
	StateConnected State = "connected"
	// StateReplaced: another connection subscribed with this bot_id and
	// WeCom closed ours; Run has returned and does not reconnect.
	StateReplaced State = "replaced"
	// StateError: WeCom refused the subscribe (bot_id or secret wrong);
	// retried after 1 min doubling to 30 min.
	StateError State = "error"
)

// Status is a snapshot of the connection for the panel and the metrics.
type Status struct {
	State State
	// Since is when State was entered.
	Since time.Time
	// Reconnects counts the dials after the first one.
	Reconnects int
	// LastError is the latest failure, kept after the link recovers ("" if
	// none yet); it never holds the secret.
	LastError string
}

// Inbound is an aibot_msg_callback or aibot_event_callback frame. Body is
// the same JSON as an API-mode callback body. Replies to it go with ReqID.
type Inbound struct {
	Cmd   string
	ReqID string
	Body  json.RawMessage
}

// Handler receives the inbound frames. It runs on the read loop, which
// also delivers the acks that Respond waits for: it must return at once
// (hand the frame to another goroutine) and never call Respond, Send or
// RespondWelcome itself. WeCom redelivers a frame after a reconnect with a
// new req_id and the same body msgid, and the handler gets it again:
// deduplication on (aibotid, msgid) is the caller's. disconnected_event is
// handled by Conn and not passed on.
type Handler func(Inbound)

// Options configures a Conn. BotID, Secret and Handler are required.
type Options struct {
	// URL defaults to DefaultURL.
	URL    string
	BotID  string
	Secret string
	// Clock times pings, ack timeouts and backoff; defaults to the real one.
	Clock clockwork.Clock
	// Log defaults to slog.Default().
	Log     *slog.Logger
	Handler Handler
	// HTTPClient dials the WebSocket (a proxy); defaults to the library's.
	HTTPClient *http.Client
}

// Errors of sending. A refused frame is an *AckError; the codes that end a
// reply for good match ErrInvalidReqID and ErrStreamExpired with errors.Is.
var (
	// ErrNotConnected: no subscribed link when the frame was to go, or the
	// link dropped before its ack (then the frame may have arrived).
	ErrNotConnected = errors.New("aibot: not connected")
	// ErrAckTimeout: no ack in time (5 s for a reply frame, 10 s for the
	// subscribe); the next frame of the req_id goes.
	ErrAckTimeout = errors.New("aibot: no ack in time")
	// ErrInvalidReqID is errcode 846605: the req_id is not one this kind of
	// frame may answer (a message reply to an enter_chat req_id) or is too
	// old. Terminal for the req_id.
	ErrInvalidReqID = errors.New("aibot: invalid req_id (846605)")
	// ErrStreamExpired is errcode 846608: the stream can no longer be
	// updated; the rest of the answer must go by Send.
	ErrStreamExpired = errors.New("aibot: stream expired (846608)")
	// ErrReplaced is what Run returns after disconnected_event.
	ErrReplaced = errors.New("aibot: another connection took the bot")
)

// AckError is a non-zero errcode in an ack, with WeCom's errmsg verbatim.
type AckError struct {
	Cmd   string
	ReqID string
	Code  int
	Msg   string
}

func (e *AckError) Error() string {
	return fmt.Sprintf("aibot: %s %s refused: errcode %d: %s", e.Cmd, e.ReqID, e.Code, e.Msg)
}

// Is matches the sentinels of the terminal codes.
func (e *AckError) Is(target error) bool {
	switch target {
	case ErrInvalidReqID:
		return e.Code == 846605
	case ErrStreamExpired:
		return e.Code == 846608
	}
	return false
}

// Conn is the long connection of one AI bot: Run keeps it subscribed;
// Respond, RespondWelcome and Send put frames on it.
type Conn struct {
	url     string
	botID   string
	secret  string
	clock   clockwork.Clock
	log     *slog.Logger
	handler Handler
	client  *http.Client

	mu     sync.Mutex
	status Status
	sess   *session // nil unless subscribed
	acks   map[string]chan ack
	queues map[string]*reqQueue
	// workers are the goroutines that drain queues; Run waits for them.
	workers sync.WaitGroup
}

// NewConn checks opts and fills in the defaults. Nothing is dialled
// before Run.
func NewConn(opts Options) (*Conn, error) {
	var errs []error
	if opts.BotID == "" {
		errs = append(errs, errors.New("aibot: bot_id is required"))
	}
	if opts.Secret == "" {
		errs = append(errs, errors.New("aibot: secret is required"))
	}
	if opts.Handler == nil {
		errs = append(errs, errors.New("aibot: a handler is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c := &Conn{
		url: opts.URL, botID: opts.BotID, secret: opts.Secret,
		clock: opts.Clock, log: opts.Log, handler: opts.Handler, client: opts.HTTPClient,
		acks: map[string]chan ack{}, queues: map[string]*reqQueue{},
	}
	if c.url == "" {
		c.url = DefaultURL
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("bot_id", c.botID)
	c.status = Status{State: StateConnecting, Since: c.clock.Now()}
	return c, nil
}

// Status returns the connection's state now.
func (c *Conn) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Respond sends one aibot_respond_msg frame for the callback reqID and
// returns its ack. Frames of one req_id go in the order of the calls, one
// at a time: each waits for the ack of the one before it, or for that
// one's 5 s to pass; other req_ids do not wait. When ctx ends first the
// frame is not sent if it has not gone yet; one that has gone keeps the
// req_id until its ack or 5 s.
func (c *Conn) Respond(ctx context.Context, reqID string, body RespondMsg) error {
	return c.do(ctx, CmdRespondMsg, reqID, body)
}

// RespondWelcome answers an enter_chat event (req_id reqID) with text,
// within 5 s of the event.
func (c *Conn) RespondWelcome(ctx context.Context, reqID, text string) error {
	return c.do(ctx, CmdRespondWelcome, reqID, WelcomeMsg{MsgType: TypeText, Text: Text{Content: text}})
}

// Send pushes body (see MarkdownSend) with aibot_send_msg under a new
// req_id. WeCom refuses it (an *AckError) for a chat that never wrote to
// the bot; Send does not retry.
func (c *Conn) Send(ctx context.Context, body SendMsg) error {
	return c.do(ctx, CmdSendMsg, NewReqID(CmdSendMsg, c.clock.Now()), body)
}

// ack is what an ack frame says.
type ack struct {
	code int
	msg  string
}

// reqQueue holds the frames of one req_id not yet sent; a worker goroutine
// drains it and ends when it is empty.
type reqQueue struct {
	items []*item
}

type item struct {
	cmd     string
	payload []byte
	done    chan error // buffered: the worker never waits for the caller
	// cancelled (guarded by Conn.mu): the caller gave up; skip the frame
	// if it has not gone yet.
	cancelled bool
}

func (c *Conn) do(ctx context.Context, cmd, reqID string, body any) error {
	payload, err := command(cmd, reqID, body)
	if err != nil {
		return fmt.Errorf("aibot: %s %s: %w", cmd, reqID, err)
	}
	it := &item{cmd: cmd, payload: payload, done: make(chan error, 1)}
	c.mu.Lock()
	if c.sess == nil {
		c.mu.Unlock()
		return fmt.Errorf("aibot: %s %s: %w", cmd, reqID, ErrNotConnected)
	}
	q := c.queues[reqID]
	if q == nil {
		q = &reqQueue{}
		c.queues[reqID] = q
		c.workers.Add(1)
		go c.drain(reqID, q)
	}
	q.items = append(q.items, it)
	c.mu.Unlock()
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		it.cancelled = true
		c.mu.Unlock()
		return ctx.Err()
	}
}

// drain sends the frames of reqID one after the other.
func (c *Conn) drain(reqID string, q *reqQueue) {
	defer c.workers.Done()
	for {
		c.mu.Lock()
		if len(q.items) == 0 {
			delete(c.queues, reqID)
			c.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items = q.items[1:]
		if it.cancelled {
			c.mu.Unlock()
			continue
		}
		s := c.sess
		var ch chan ack
		if s != nil {
			ch = c.expectLocked(reqID)
		}
		c.mu.Unlock()
		it.done <- c.exchange(s, it.cmd, reqID, it.payload, ch, ackTimeout)
	}
}

func (c *Conn) expectLocked(reqID string) chan ack {
	ch := make(chan ack, 1)
	c.acks[reqID] = ch
	return ch
}

func (c *Conn) expect(reqID string) chan ack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expectLocked(reqID)
}

func (c *Conn) forget(reqID string, ch chan ack) {
	c.mu.Lock()
	if c.acks[reqID] == ch {
		delete(c.acks, reqID)
	}
	c.mu.Unlock()
}

// exchange writes payload on s and waits for the ack on ch (registered
// before, so that an ack cannot come first) for up to timeout.
func (c *Conn) exchange(s *session, cmd, reqID string, payload []byte, ch chan ack, timeout time.Duration) error {
	if s == nil {
		return fmt.Errorf("aibot: %s %s: %w", cmd, reqID, ErrNotConnected)
	}
	defer c.forget(reqID, ch)
	// The timer starts before the write: a test that sees the frame
	// arrive can move the clock at once.
	t := c.clock.NewTimer(timeout)
	defer t.Stop()
	if err := s.ws.Write(s.ctx, websocket.MessageText, payload); err != nil {
		s.fail(fmt.Errorf("aibot: write: %w", err))
		return fmt.Errorf("aibot: %s %s: %w: %v", cmd, reqID, ErrNotConnected, err)
	}
	select {
	case a := <-ch:
		if a.code != 0 {
			return &AckError{Cmd: cmd, ReqID: reqID, Code: a.code, Msg: a.msg}
		}
		return nil
	case <-t.Chan():
		return fmt.Errorf("aibot: %s %s: %w (%v)", cmd, reqID, ErrAckTimeout, timeout)
	case <-s.ctx.Done():
		return fmt.Errorf("aibot: %s %s: %w: the link dropped before the ack", cmd, reqID, ErrNotConnected)
	}
}

// session is one dialled WebSocket; it ends with a cause.
type session struct {
	ws   *websocket.Conn
	ctx  context.Context
	fail context.CancelCauseFunc
}

// Run keeps the bot subscribed until ctx ends (it then returns nil) or
// WeCom reports that another connection took the bot (ErrReplaced). It
// reconnects after a dropped link or two missed ping acks, 1 s doubling
// to 30 s, and after a refused subscribe, 1 min doubling to 30 min: that
// needs an admin, and subscribes are frequency-protected. Call it once.
func (c *Conn) Run(ctx context.Context) error {
	defer c.workers.Wait()
	transient := newBackOff(time.Second, 30*time.Second)
	config := newBackOff(time.Minute, 30*time.Minute)
	lastRefusal := 0 // errcode of the refusal last logged at error level
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if attempt > 0 {
			c.status.Reconnects++
		}
		if c.status.State != StateError {
			c.setStateLocked(StateConnecting)
		}
		c.mu.Unlock()

		subscribed, err := c.connect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !subscribed.IsZero() {
			config.Reset()
			lastRefusal = 0
		}
		var wait time.Duration
		var refused *AckError
		switch {
		case errors.Is(err, ErrReplaced):
			c.log.Warn("another connection took this bot; not reconnecting",
				"hint", "another instance or program subscribed with this bot_id; WeCom keeps one connection per bot")
			c.mu.Lock()
			c.setStateLocked(StateReplaced)
			c.status.LastError = err.Error()
			c.mu.Unlock()
			return ErrReplaced
		case errors.As(err, &refused) && refused.Cmd == CmdSubscribe:
			wait = config.NextBackOff()
			if refused.Code != lastRefusal {
				lastRefusal = refused.Code
				c.log.Error("WeCom refused the subscribe; retrying later",
					"errcode", refused.Code, "errmsg", refused.Msg, "retry_in", wait,
					"hint", "check bot_id and secret, and that the bot uses API mode with a long connection")
			} else {
				c.log.Debug("subscribe refused again", "errcode", refused.Code, "retry_in", wait)
			}
			c.mu.Lock()
			c.setStateLocked(StateError)
			c.status.LastError = err.Error()
			c.mu.Unlock()
		default:
			// A link that drops right after subscribing keeps doubling its
			// pause: subscribes are frequency-protected.
			if !subscribed.IsZero() && c.clock.Since(subscribed) >= pingInterval {
				transient.Reset()
			}
			wait = transient.NextBackOff()
			c.log.Warn("long connection down; reconnecting", "err", err, "retry_in", wait)
			c.mu.Lock()
			c.setStateLocked(StateConnecting)
			c.status.LastError = err.Error()
			c.mu.Unlock()
		}
		t := c.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.Chan():
		}
	}
}

func (c *Conn) setStateLocked(s State) {
	if c.status.State != s {
		c.status.State = s
		c.status.Since = c.clock.Now()
	}
}

// connect runs one session: dial, subscribe, then ping until the link
// ends. It returns when the subscribe succeeded (zero if it did not) and
// why the session ended.
func (c *Conn) connect(ctx context.Context) (time.Time, error) {
	dialCtx, cancelDial := context.WithCancel(ctx)
	deadline := c.clock.AfterFunc(subscribeTimeout, cancelDial)
	ws, _, err := websocket.Dial(dialCtx, c.url, &websocket.DialOptions{HTTPClient: c.client})
	deadline.Stop()
	cancelDial()
	if err != nil {
		return time.Time{}, fmt.Errorf("aibot: dial: %w", err)
	}
	ws.SetReadLimit(readLimit)
	sctx, fail := context.WithCancelCause(ctx)
	s := &session{ws: ws, ctx: sctx, fail: fail}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		c.read(s)
	}()
	defer func() {
		s.fail(errors.New("aibot: session closed"))
		_ = ws.CloseNow()
		<-readDone
	}()

	reqID := NewReqID(CmdSubscribe, c.clock.Now())
	payload, err := command(CmdSubscribe, reqID, SubscribeBody{BotID: c.botID, Secret: c.secret})
	if err != nil {
		return time.Time{}, err
	}
	if err := c.exchange(s, CmdSubscribe, reqID, payload, c.expect(reqID), subscribeTimeout); err != nil {
		return time.Time{}, err
	}

	ticker := c.clock.NewTicker(pingInterval)
	defer ticker.Stop()
	since := c.clock.Now()
	c.mu.Lock()
	c.sess = s
	c.setStateLocked(StateConnected)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
	}()
	c.log.Info("long connection subscribed", "url", c.url)

	var pingID string
	var pong chan ack // nil when no ping waits for its ack
	missed := 0
	for {
		select {
		case <-s.ctx.Done():
			c.forget(pingID, pong)
			return since, context.Cause(s.ctx)
		case a := <-pong:
			if a.code != 0 {
				c.log.Warn("ping refused", "errcode", a.code, "errmsg", a.msg)
			}
			missed, pong = 0, nil
		case <-ticker.Chan():
			select {
			case <-pong: // came with the tick
				missed, pong = 0, nil
			default:
			}
			if pong != nil {
				c.forget(pingID, pong)
				if missed++; missed >= maxMissedPings {
					s.fail(fmt.Errorf("aibot: %d ping acks missed", missed))
					continue
				}
			}
			pingID = NewReqID(CmdPing, c.clock.Now())
			pong = c.expect(pingID)
			payload, _ := command(CmdPing, pingID, nil) // a ping has no body to fail
			if err := ws.Write(s.ctx, websocket.MessageText, payload); err != nil {
				s.fail(fmt.Errorf("aibot: write ping: %w", err))
			}
		}
	}
}

// read delivers the frames of s until its link ends.
func (c *Conn) read(s *session) {
	for {
		_, data, err := s.ws.Read(s.ctx)
		if err != nil {
			s.fail(fmt.Errorf("aibot: read: %w", err))
			return
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			c.log.Warn("frame is not JSON; dropped", "err", err, "bytes", len(data))
			continue
		}
		switch {
		case f.Cmd == CmdMsgCallback || f.Cmd == CmdEventCallback:
			if f.Cmd == CmdEventCallback && eventType(f.Body) == "disconnected_event" {
				s.fail(ErrReplaced)
				return
			}
			c.handler(Inbound{Cmd: f.Cmd, ReqID: f.Headers.ReqID, Body: f.Body})
		case f.ErrCode != nil:
			c.deliver(f)
		default:
			c.log.Warn("unknown frame; dropped", "cmd", f.Cmd, "req_id", f.Headers.ReqID)
		}
	}
}

// deliver hands an ack to whoever waits for its req_id. An ack nobody
// waits for came after its 5 s; since acks name only the req_id, one that
// comes while the next frame of that req_id waits is taken as that frame's.
func (c *Conn) deliver(f Frame) {
	c.mu.Lock()
	ch := c.acks[f.Headers.ReqID]
	delete(c.acks, f.Headers.ReqID)
	c.mu.Unlock()
	if ch == nil {
		c.log.Debug("ack for no waiting frame", "req_id", f.Headers.ReqID, "errcode", *f.ErrCode)
		return
	}
	ch <- ack{code: *f.ErrCode, msg: f.ErrMsg}
}

func eventType(body json.RawMessage) string {
	var b struct {
		Event struct {
			EventType string `json:"eventtype"`
		} `json:"event"`
	}
	_ = json.Unmarshal(body, &b) // a body that is not an event has no type
	return b.Event.EventType
}

// newBackOff is a schedule of pauses without jitter, as the official SDK
// keeps them: one connection per bot, so there is no crowd to spread. The
// waits are on the injected clock.
func newBackOff(initial, maxInterval time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: initial, Multiplier: 2, MaxInterval: maxInterval}
	b.Reset()
	return b
}
