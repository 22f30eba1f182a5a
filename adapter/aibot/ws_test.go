package aibot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/internal/eventually"
)

// The tests run Conn against a real WebSocket server (httptest +
// websocket.Accept) that each test scripts: what to ack, when, with which
// errcode, and when to drop or kick. Time is a fake clock; the timers Conn
// creates are reported on a channel, so a test knows the exact pause Conn
// chose and that it is armed before moving the clock.

const testSecret = "S3cr3t-never-logged"

// testGuard bounds every wait for the other side, so that a broken Conn fails
// the test instead of hanging it; correct code never waits that long.
const testGuard = 10 * time.Second

// recClock is a fake clock that reports the duration of each timer it
// makes, once the timer is armed.
type recClock struct {
	*clockwork.FakeClock
	timers  chan time.Duration
	tickers chan time.Duration
}

func (c *recClock) NewTimer(d time.Duration) clockwork.Timer {
	t := c.FakeClock.NewTimer(d)
	c.timers <- d
	return t
}

func (c *recClock) NewTicker(d time.Duration) clockwork.Ticker {
	t := c.FakeClock.NewTicker(d)
	c.tickers <- d
	return t
}

// peer is the server's side of one accepted connection.
type peer struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan Frame // closed when the link ends
}

func (p *peer) recv() Frame {
	p.t.Helper()
	select {
	case f, ok := <-p.frames:
		if !ok {
			p.t.Fatal("link closed while waiting for a frame")
		}
		return f
	case <-time.After(testGuard):
		p.t.Fatal("no frame")
	}
	return Frame{}
}

func (p *peer) write(v any) {
	p.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
		p.t.Fatalf("server write: %v", err)
	}
}

// ack answers reqID in WeCom's shape: no cmd.
func (p *peer) ack(reqID string, code int, msg string) {
	p.t.Helper()
	p.write(map[string]any{"headers": map[string]string{"req_id": reqID}, "errcode": code, "errmsg": msg})
}

// closed waits for the link to end.
func (p *peer) closed() {
	p.t.Helper()
	for {
		select {
		case _, ok := <-p.frames:
			if !ok {
				return
			}
		case <-time.After(testGuard):
			p.t.Fatal("link still open")
		}
	}
}

// nothingPending fails if a frame has arrived. It cannot wait for frames
// that are not sent: a frame sent too early and still on its way passes
// here and is caught by the next recv, which expects another frame.
func (p *peer) nothingPending() {
	p.t.Helper()
	select {
	case f, ok := <-p.frames:
		if ok {
			p.t.Fatalf("unexpected frame %s %s", f.Cmd, f.Headers.ReqID)
		}
	default:
	}
}

type harness struct {
	t       *testing.T
	clock   *recClock
	conn    *Conn
	peers   chan *peer
	inbound chan Inbound
	logs    *syncBuffer
	runErr  chan error
	cancel  context.CancelFunc
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startConn runs a Conn against a new server. At the end it checks that the
// secret appeared in no log line and no status.
func startConn(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		t:       t,
		clock:   &recClock{FakeClock: clockwork.NewFakeClock(), timers: make(chan time.Duration, 100), tickers: make(chan time.Duration, 10)},
		peers:   make(chan *peer, 10),
		inbound: make(chan Inbound, 10),
		logs:    &syncBuffer{},
		runErr:  make(chan error, 1),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		p := &peer{t: t, ws: ws, frames: make(chan Frame, 100)}
		h.peers <- p
		defer close(p.frames)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			var f Frame
			if err := json.Unmarshal(b, &f); err != nil {
				t.Errorf("client sent non-JSON %q", b)
				return
			}
			p.frames <- f
		}
	}))
	var err error
	h.conn, err = NewConn(Options{
		URL: srv.URL, BotID: "aibTEST", Secret: testSecret, Clock: h.clock,
		Log:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: func(in Inbound) { h.inbound <- in },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- h.conn.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.runErr:
		case <-time.After(testGuard):
			t.Error("Run did not return after its context ended")
		}
		srv.CloseClientConnections()
		srv.Close()
		if strings.Contains(h.logs.String(), testSecret) {
			t.Errorf("the secret is in the log:\n%s", h.logs)
		}
		if strings.Contains(h.conn.Status().LastError, testSecret) {
			t.Errorf("the secret is in the status: %q", h.conn.Status().LastError)
		}
	})
	return h
}

func (h *harness) accept() *peer {
	h.t.Helper()
	select {
	case p := <-h.peers:
		return p
	case <-time.After(testGuard):
		h.t.Fatal("Conn did not dial")
	}
	return nil
}

// subscribe accepts a dial, checks the subscribe frame, acks it with
// errcode code, and returns the peer.
func (h *harness) subscribe(code int, msg string) *peer {
	h.t.Helper()
	p := h.accept()
	f := p.recv()
	var body SubscribeBody
	if err := json.Unmarshal(f.Body, &body); err != nil {
		h.t.Fatal(err)
	}
	if f.Cmd != CmdSubscribe || !strings.HasPrefix(f.Headers.ReqID, CmdSubscribe+"_") || body != (SubscribeBody{BotID: "aibTEST", Secret: testSecret}) {
		h.t.Fatalf("first frame %+v, body %+v", f, body)
	}
	h.timer(subscribeTimeout)
	p.ack(f.Headers.ReqID, code, msg)
	return p
}

// connect is subscribe with success, waiting until Conn takes frames.
func (h *harness) connect() *peer {
	h.t.Helper()
	p := h.subscribe(0, "ok")
	select {
	case d := <-h.clock.tickers:
		if d != pingInterval {
			h.t.Fatalf("ticker every %v, want %v", d, pingInterval)
		}
	case <-time.After(testGuard):
		h.t.Fatal("no ping ticker after the subscribe ack")
	}
	eventually.True(h.t, func() bool { return h.conn.Status().State == StateConnected }, "state %v", h.conn.Status().State)
	return p
}

// timer waits for Conn to arm a timer and checks its duration.
func (h *harness) timer(want time.Duration) {
	h.t.Helper()
	select {
	case d := <-h.clock.timers:
		if d != want {
			h.t.Fatalf("timer of %v, want %v", d, want)
		}
	case <-time.After(testGuard):
		h.t.Fatalf("no timer armed (want %v)", want)
	}
}

// delivered makes sure Conn has read every frame p sent so far: the read
// loop handles frames in order, so once the handler has a callback sent
// after them, they have been delivered.
func (h *harness) delivered(p *peer) {
	h.t.Helper()
	p.write(map[string]any{"cmd": CmdEventCallback, "headers": map[string]string{"req_id": "sync"}, "body": map[string]any{}})
	if in := h.next(); in.ReqID != "sync" {
		h.t.Fatalf("handler got %+v", in)
	}
}

func (h *harness) noDial() {
	h.t.Helper()
	select {
	case <-h.peers:
		h.t.Fatal("Conn dialled before its pause ended")
	default:
	}
}

// §9.15: the subscribe ack has no cmd and is matched by req_id alone.
func TestSubscribeAckWithoutCmd(t *testing.T) {
	h := startConn(t)
	h.connect()
	st := h.conn.Status()
	if st.State != StateConnected || st.Reconnects != 0 || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
}

// WebSocket-level pings from the server are answered (by the library,
// while Conn reads).
func TestAnswersControlPings(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	ctx, cancel := context.WithTimeout(context.Background(), testGuard)
	defer cancel()
	if err := p.ws.Ping(ctx); err != nil {
		t.Fatalf("no pong: %v", err)
	}
}

// §9.15: a ping every 30 s on the clock, none before.
func TestPingEvery30s(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	for i := range 3 {
		h.clock.Advance(pingInterval - time.Millisecond)
		p.nothingPending()
		h.clock.Advance(time.Millisecond)
		f := p.recv()
		if f.Cmd != CmdPing || !strings.HasPrefix(f.Headers.ReqID, "ping_") || f.Body != nil {
			t.Fatalf("ping %d: %+v", i, f)
		}
		p.ack(f.Headers.ReqID, 0, "ok")
		h.delivered(p)
	}
	// Acked pings keep the link: three more intervals without a dial.
	h.noDial()
	if st := h.conn.Status(); st.State != StateConnected {
		t.Fatalf("status %+v", st)
	}
}

// §9.15: two missed ping acks end the link; Conn dials again after 1 s,
// and a link that dies young doubles the pause.
func TestTwoMissedPingAcksReconnectWithBackoff(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	h.clock.Advance(pingInterval)
	p.recv() // not acked
	h.clock.Advance(pingInterval)
	p.recv() // not acked
	h.clock.Advance(pingInterval)
	p.closed()
	h.timer(time.Second)
	h.clock.Advance(time.Second - time.Millisecond)
	h.noDial()
	h.clock.Advance(time.Millisecond)
	p = h.connect()
	if st := h.conn.Status(); st.Reconnects != 1 || !strings.Contains(st.LastError, "ping acks missed") {
		t.Fatalf("status %+v", st)
	}
	// This one drops at once: the pause doubles (and was not reset by a
	// subscribe that lasted under one ping interval).
	_ = p.ws.CloseNow()
	h.timer(2 * time.Second)
	if st := h.conn.Status(); st.State != StateConnecting {
		t.Fatalf("status %+v", st)
	}
}

// A socket that keeps dropping before the subscribe ack: 1 s doubling to
// a 30 s cap.
func TestDroppedSocketBackoffDoublesTo30s(t *testing.T) {
	h := startConn(t)
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		p := h.accept()
		p.recv()
		_ = p.ws.CloseNow()
		h.timer(subscribeTimeout)
		h.timer(want * time.Second)
		if st := h.conn.Status(); st.Reconnects != i || st.State != StateConnecting {
			t.Fatalf("after drop %d: status %+v", i, st)
		}
		h.clock.Advance(want * time.Second)
	}
}

// The subscribe ack does not come within 10 s: a transient failure.
func TestSubscribeAckTimeout(t *testing.T) {
	h := startConn(t)
	p := h.accept()
	p.recv()
	h.timer(subscribeTimeout)
	h.clock.Advance(subscribeTimeout)
	p.closed()
	h.timer(time.Second)
	if st := h.conn.Status(); st.State != StateConnecting || !strings.Contains(st.LastError, ErrAckTimeout.Error()) {
		t.Fatalf("status %+v", st)
	}
}

// §5: a refused subscribe is a configuration error: logged once with a
// hint, state error, retried after 1 min doubling, never in a tight loop.
func TestRefusedSubscribeBacksOffAsConfigError(t *testing.T) {
	h := startConn(t)
	for _, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		p := h.subscribe(40058, "invalid secret")
		p.closed()
		h.timer(want * time.Minute)
		st := h.conn.Status()
		if st.State != StateError || !strings.Contains(st.LastError, "40058") {
			t.Fatalf("status %+v", st)
		}
		h.clock.Advance(want*time.Minute - time.Second)
		h.noDial()
		h.clock.Advance(time.Second)
	}
	if n := strings.Count(h.logs.String(), "check bot_id and secret"); n != 1 {
		t.Fatalf("the hint is logged %d times, want once:\n%s", n, h.logs)
	}
	// Fixed in the console: the next subscribe succeeds.
	h.connect()
	if st := h.conn.Status(); !strings.Contains(st.LastError, "40058") || st.Reconnects != 7 {
		t.Fatalf("status %+v", st)
	}
}

// §9.15: disconnected_event means another connection took the bot: no
// reconnect, state replaced, one log line, not passed to the handler.
func TestDisconnectedEventStopsReconnecting(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	p.write(map[string]any{"cmd": CmdEventCallback, "headers": map[string]string{"req_id": "ev9"},
		"body": map[string]any{"msgid": "m9", "create_time": 1700000000, "aibotid": "aibTEST", "msgtype": "event",
			"event": map[string]string{"eventtype": "disconnected_event"}}})
	select {
	case err := <-h.runErr:
		if !errors.Is(err, ErrReplaced) {
			t.Fatalf("Run returned %v, want ErrReplaced", err)
		}
		h.runErr <- err // for the cleanup
	case <-time.After(testGuard):
		t.Fatal("Run still running after disconnected_event")
	}
	p.closed()
	h.clock.Advance(time.Hour)
	h.noDial()
	if st := h.conn.Status(); st.State != StateReplaced {
		t.Fatalf("status %+v", st)
	}
	if n := strings.Count(h.logs.String(), "another connection"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, h.logs)
	}
	select {
	case in := <-h.inbound:
		t.Fatalf("handler got %+v", in)
	default:
	}
	if err := h.conn.Respond(context.Background(), "cb", MarkdownReply("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Respond after replaced: %v", err)
	}
}

func streamContent(t *testing.T, f Frame) string {
	t.Helper()
	var b RespondMsg
	if err := json.Unmarshal(f.Body, &b); err != nil || b.Stream == nil {
		t.Fatalf("not a stream frame: %s (%v)", f.Body, err)
	}
	return b.Stream.Content
}

// queued reports how many frames of reqID wait behind the one in flight.
func (h *harness) queued(reqID string) int {
	h.conn.mu.Lock()
	defer h.conn.mu.Unlock()
	if q := h.conn.queues[reqID]; q != nil {
		return len(q.items)
	}
	return 0
}

// §9.16: one frame in flight per req_id; a slow ack delays the next and
// never reorders; 5 s without an ack lets the next go; another req_id
// does not wait; 846608 comes back as terminal.
func TestRespondOrderPerReqID(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	ctx := context.Background()
	results := make([]chan error, 4)
	respond := func(i int, reqID, content string) {
		results[i] = make(chan error, 1)
		go func() { results[i] <- h.conn.Respond(ctx, reqID, StreamReply("s1", content, i == 2, "")) }()
	}
	result := func(i int) error {
		select {
		case err := <-results[i]:
			return err
		case <-time.After(testGuard):
			t.Fatalf("Respond %d did not return", i)
		}
		return nil
	}

	respond(0, "A", "1")
	a1 := p.recv()
	h.timer(ackTimeout)
	if a1.Cmd != CmdRespondMsg || a1.Headers.ReqID != "A" || streamContent(t, a1) != "1" {
		t.Fatalf("first frame %+v", a1)
	}
	respond(1, "A", "12")
	eventually.True(t, func() bool { return h.queued("A") == 1 }, "second frame not queued")
	respond(2, "A", "123")
	eventually.True(t, func() bool { return h.queued("A") == 2 }, "third frame not queued")

	// Another req_id goes at once while A's first frame waits.
	respond(3, "B", "b")
	b := p.recv()
	h.timer(ackTimeout)
	if b.Headers.ReqID != "B" {
		t.Fatalf("frame %+v went before B's", b)
	}
	p.ack("B", 0, "ok")
	if err := result(3); err != nil {
		t.Fatalf("B: %v", err)
	}
	p.nothingPending()

	// The slow ack of A's first frame releases the second, and only it.
	p.ack("A", 0, "ok")
	if err := result(0); err != nil {
		t.Fatalf("A1: %v", err)
	}
	a2 := p.recv()
	h.timer(ackTimeout)
	if streamContent(t, a2) != "12" {
		t.Fatalf("second frame %s", a2.Body)
	}
	p.nothingPending()

	// No ack for 5 s: the second frame fails with ErrAckTimeout, the third goes.
	h.clock.Advance(ackTimeout - time.Millisecond)
	p.nothingPending()
	h.clock.Advance(time.Millisecond)
	if err := result(1); !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("A2: %v, want ErrAckTimeout", err)
	}
	a3 := p.recv()
	if streamContent(t, a3) != "123" {
		t.Fatalf("third frame %s", a3.Body)
	}
	p.ack("A", 846608, "stream message update expired (>6 minutes), cannot update")
	err := result(2)
	var ae *AckError
	if !errors.Is(err, ErrStreamExpired) || !errors.As(err, &ae) || ae.Code != 846608 || ae.ReqID != "A" {
		t.Fatalf("A3: %v, want ErrStreamExpired", err)
	}
}

// A frame whose caller gave up before it went is never sent; the frames
// behind it keep their order.
func TestRespondCancelledBeforeSendingIsSkipped(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	first := make(chan error, 1)
	go func() { first <- h.conn.Respond(context.Background(), "A", StreamReply("s", "1", false, "")) }()
	p.recv()
	h.timer(ackTimeout)

	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- h.conn.Respond(ctx, "A", StreamReply("s", "12", false, "")) }()
	eventually.True(t, func() bool { return h.queued("A") == 1 }, "second frame not queued")
	third := make(chan error, 1)
	go func() { third <- h.conn.Respond(context.Background(), "A", StreamReply("s", "123", true, "")) }()
	eventually.True(t, func() bool { return h.queued("A") == 2 }, "third frame not queued")
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Respond: %v", err)
	}

	p.ack("A", 0, "ok")
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	f := p.recv()
	if got := streamContent(t, f); got != "123" {
		t.Fatalf("after the first frame came %q, want the third", got)
	}
	p.ack("A", 0, "ok")
	if err := <-third; err != nil {
		t.Fatal(err)
	}
}

// §5, §9.16: the ack errcodes reach the caller; 846605 and 846608 match
// their sentinels, others only *AckError.
func TestAckErrcodesSurface(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	tests := []struct {
		code     int
		sentinel error
	}{
		{846605, ErrInvalidReqID},
		{846608, ErrStreamExpired},
		{40008, nil},
	}
	for _, tt := range tests {
		done := make(chan error, 1)
		go func() { done <- h.conn.Respond(context.Background(), "enter1", StreamReply("s", "x", true, "")) }()
		f := p.recv()
		h.timer(ackTimeout)
		p.ack(f.Headers.ReqID, tt.code, "msg")
		var err error
		select {
		case err = <-done:
		case <-time.After(testGuard):
			t.Fatal("Respond did not return")
		}
		var ae *AckError
		if !errors.As(err, &ae) || ae.Code != tt.code || ae.Msg != "msg" {
			t.Fatalf("code %d: %v", tt.code, err)
		}
		for _, s := range []error{ErrInvalidReqID, ErrStreamExpired} {
			if errors.Is(err, s) != (s == tt.sentinel) {
				t.Fatalf("code %d: errors.Is(%v) = %v", tt.code, s, !(s == tt.sentinel))
			}
		}
	}
}

// The welcome goes with the event's req_id as text.
func TestRespondWelcome(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	done := make(chan error, 1)
	go func() { done <- h.conn.RespondWelcome(context.Background(), "ev1", "hello") }()
	f := p.recv()
	if f.Cmd != CmdRespondWelcome || f.Headers.ReqID != "ev1" || string(f.Body) != `{"msgtype":"text","text":{"content":"hello"}}` {
		t.Fatalf("frame %+v body %s", f, f.Body)
	}
	p.ack("ev1", 0, "ok")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// §9.18: aibot_send_msg under a new req_id; a refusal (a chat that never
// wrote to the bot) is returned, not retried.
func TestSendRefusedIsReturnedNotRetried(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	done := make(chan error, 1)
	go func() { done <- h.conn.Send(context.Background(), MarkdownSend("zhangsan", "the rest")) }()
	f := p.recv()
	h.timer(ackTimeout)
	if f.Cmd != CmdSendMsg || !strings.HasPrefix(f.Headers.ReqID, CmdSendMsg+"_") ||
		string(f.Body) != `{"chatid":"zhangsan","msgtype":"markdown","markdown":{"content":"the rest"}}` {
		t.Fatalf("frame %+v body %s", f, f.Body)
	}
	p.ack(f.Headers.ReqID, 846609, "no conversation")
	var ae *AckError
	if err := <-done; !errors.As(err, &ae) || ae.Cmd != CmdSendMsg {
		t.Fatalf("Send: %v", err)
	}
	// No retry: the only other frame that may ever come is a ping.
	h.clock.Advance(pingInterval)
	if f := p.recv(); f.Cmd != CmdPing {
		t.Fatalf("after the refusal: %+v", f)
	}
}

// Sending while disconnected is an error at once, and a link that drops
// before the ack fails the frame rather than losing it silently.
func TestSendWhileDisconnected(t *testing.T) {
	h := startConn(t)
	if err := h.conn.Respond(context.Background(), "A", MarkdownReply("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("before connecting: %v", err)
	}
	p := h.connect()
	done := make(chan error, 1)
	go func() { done <- h.conn.Respond(context.Background(), "A", MarkdownReply("x")) }()
	p.recv()
	_ = p.ws.CloseNow()
	if err := <-done; !errors.Is(err, ErrNotConnected) {
		t.Fatalf("link dropped before the ack: %v", err)
	}
	h.timer(ackTimeout)
	h.timer(time.Second)
	if err := h.conn.Send(context.Background(), MarkdownSend("u", "x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("while reconnecting: %v", err)
	}
}

// §9.17: WeCom redelivers a message after a reconnect with a new req_id;
// the handler gets it again, with the same msgid in the body for the
// caller's dedupe, and replies go with the new req_id.
func TestRedeliveryAfterReconnectReachesTheHandler(t *testing.T) {
	h := startConn(t)
	p := h.connect()
	body := map[string]any{"msgid": "08f2b98a", "aibotid": "aibTEST", "chattype": "single",
		"from": map[string]string{"userid": "U"}, "msgtype": "text", "text": map[string]string{"content": "hi"}}
	p.write(map[string]any{"cmd": CmdMsgCallback, "headers": map[string]string{"req_id": "r1"}, "body": body})
	first := h.next()
	_ = p.ws.CloseNow()
	h.timer(time.Second)
	h.clock.Advance(time.Second)
	p = h.connect()
	p.write(map[string]any{"cmd": CmdMsgCallback, "headers": map[string]string{"req_id": "r2"}, "body": body})
	second := h.next()
	if first.ReqID != "r1" || second.ReqID != "r2" || first.Cmd != CmdMsgCallback || !bytes.Equal(first.Body, second.Body) {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	var m struct{ MsgID string }
	if err := json.Unmarshal(second.Body, &m); err != nil || m.MsgID != "08f2b98a" {
		t.Fatalf("body %s", second.Body)
	}
}

func (h *harness) next() Inbound {
	h.t.Helper()
	select {
	case in := <-h.inbound:
		return in
	case <-time.After(testGuard):
		h.t.Fatal("handler not called")
	}
	return Inbound{}
}

func TestNewConnRequiresCredentialsAndHandler(t *testing.T) {
	_, err := NewConn(Options{})
	for _, want := range []string{"bot_id", "secret", "handler"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("NewConn(Options{}) = %v, want it to name %s", err, want)
		}
	}
}
