package wecomsim

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

const (
	wsBot    = "aibcf7gdd"
	wsSecret = "long-connection-secret"
)

type wsFixture struct {
	sim *Server
	clk *clock
	url string // ws://…/prefix/aibot/ws
	ctx context.Context
}

func newWSFixture(t *testing.T) *wsFixture {
	t.Helper()
	clk := newClock()
	sim := New(Options{AIBots: []AIBot{{BotID: wsBot, Secret: wsSecret}}, Now: clk.Now})
	ts := httptest.NewServer(sim.Handler())
	t.Cleanup(ts.Close)
	// A deadline for reads, so a missing frame fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &wsFixture{sim: sim, clk: clk, url: "ws" + strings.TrimPrefix(ts.URL, "http") + "/wecom" + AIBotWSPath, ctx: ctx}
}

// wsClient is the service's end of the long connection.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
	f *wsFixture
}

func (f *wsFixture) dial(t *testing.T) *wsClient {
	t.Helper()
	c, _, err := websocket.Dial(f.ctx, f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{t: t, c: c, f: f}
}

func (w *wsClient) send(cmd, reqID string, body any) {
	w.t.Helper()
	if err := wsjson.Write(w.f.ctx, w.c, map[string]any{"cmd": cmd, "headers": map[string]string{"req_id": reqID}, "body": body}); err != nil {
		w.t.Fatal(err)
	}
}

// read returns the next frame as a generic map.
func (w *wsClient) read() map[string]any {
	w.t.Helper()
	var m map[string]any
	if err := wsjson.Read(w.f.ctx, w.c, &m); err != nil {
		w.t.Fatalf("read: %v", err)
	}
	return m
}

// call sends a command and returns its ack's errcode, checking that the ack
// carries the req_id and no cmd.
func (w *wsClient) call(cmd, reqID string, body any) int {
	w.t.Helper()
	w.send(cmd, reqID, body)
	ack := w.read()
	if _, ok := ack["cmd"]; ok {
		w.t.Fatalf("ack to %s carries a cmd: %v", cmd, ack)
	}
	if got := ack["headers"].(map[string]any)["req_id"]; got != reqID {
		w.t.Fatalf("ack to %s has req_id %v, want %s", cmd, got, reqID)
	}
	return int(ack["errcode"].(float64))
}

func (w *wsClient) subscribe() {
	w.t.Helper()
	if code := w.call("aibot_subscribe", "aibot_subscribe_1", map[string]string{"bot_id": wsBot, "secret": wsSecret}); code != 0 {
		w.t.Fatalf("subscribe: errcode %d", code)
	}
}

func TestAIBotWSSubscribeAndPing(t *testing.T) {
	f := newWSFixture(t)
	w := f.dial(t)
	if code := w.call("aibot_respond_msg", "r0", map[string]any{"msgtype": "markdown"}); code != AIBotErrBadRequest {
		t.Errorf("a command before subscribing: errcode %d", code)
	}
	if code := w.call("aibot_subscribe", "s1", map[string]string{"bot_id": wsBot, "secret": "wrong"}); code != AIBotErrInvalidSecret {
		t.Errorf("wrong secret: errcode %d", code)
	}
	if code := w.call("aibot_subscribe", "s2", map[string]string{"bot_id": "aibnobody", "secret": wsSecret}); code != AIBotErrInvalidSecret {
		t.Errorf("unknown bot: errcode %d", code)
	}
	if _, ok := f.sim.AIBotConnection(wsBot); ok || f.sim.AIBotSubscribes(wsBot) != 0 {
		t.Fatal("a refused subscribe connected the bot")
	}
	w.subscribe()
	if code := w.call("ping", "ping_1", nil); code != 0 {
		t.Errorf("ping: errcode %d", code)
	}
	conn, ok := f.sim.AIBotConnection(wsBot)
	if !ok || conn.Since != f.clk.Now() || f.sim.AIBotSubscribes(wsBot) != 1 {
		t.Errorf("connection %+v %v, %d subscribes", conn, ok, f.sim.AIBotSubscribes(wsBot))
	}
	frames := f.sim.AIBotFrames("")
	if len(frames) != 5 || frames[4].Cmd != "ping" || frames[4].BotID != wsBot || frames[1].ErrCode != AIBotErrInvalidSecret || !frames[4].Acked {
		t.Errorf("frames %+v", frames)
	}
}

func TestAIBotWSSecondSubscribeKicksTheFirst(t *testing.T) {
	f := newWSFixture(t)
	first := f.dial(t)
	first.subscribe()
	second := f.dial(t)
	second.subscribe()

	ev := first.read()
	body := ev["body"].(map[string]any)
	if ev["cmd"] != "aibot_event_callback" || body["aibotid"] != wsBot ||
		body["event"].(map[string]any)["eventtype"] != "disconnected_event" {
		t.Fatalf("the first connection got %v", ev)
	}
	if _, _, err := first.c.Read(f.ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("the first connection was not closed by the server: %v", err)
	}
	if err := f.sim.AIBotWait(f.ctx, func() bool {
		c, ok := f.sim.AIBotConnection(wsBot)
		return ok && c.ID == 2
	}); err != nil {
		t.Fatal("the second connection does not hold the bot")
	}
	if n := f.sim.AIBotSubscribes(wsBot); n != 2 {
		t.Errorf("%d subscribes", n)
	}
}

// pushed reads a callback frame and returns its req_id and body.
func (w *wsClient) pushed(cmd string) (string, AIBotBody) {
	w.t.Helper()
	var fr struct {
		Cmd     string    `json:"cmd"`
		Headers wsHeaders `json:"headers"`
		Body    AIBotBody `json:"body"`
	}
	if err := wsjson.Read(w.f.ctx, w.c, &fr); err != nil {
		w.t.Fatal(err)
	}
	if fr.Cmd != cmd || fr.Headers.ReqID == "" {
		w.t.Fatalf("got %s with req_id %q, want %s", fr.Cmd, fr.Headers.ReqID, cmd)
	}
	return fr.Headers.ReqID, fr.Body
}

func stream(id, content string, finish bool, feedback string) map[string]any {
	s := map[string]any{"id": id, "finish": finish, "content": content}
	if feedback != "" {
		s["feedback"] = map[string]string{"id": feedback}
	}
	return map[string]any{"msgtype": "stream", "stream": s}
}

func TestAIBotWSMessageStream(t *testing.T) {
	f := newWSFixture(t)
	w := f.dial(t)
	w.subscribe()

	msg := AIBotText("", "zhangsan", "你好")
	reqID, err := f.sim.DeliverMessage(f.ctx, wsBot, msg)
	if err != nil {
		t.Fatal(err)
	}
	got, body := w.pushed("aibot_msg_callback")
	if got != reqID || body.MsgID != msg.MsgID || body.AIBotID != wsBot || body.Text.Content != "你好" ||
		!strings.Contains(body.ResponseURL, "/wecom"+AIBotResponsePath+"?response_code=") {
		t.Fatalf("delivered %s %+v", got, body)
	}

	if code := w.call("aibot_respond_welcome_msg", reqID, map[string]any{"msgtype": "text"}); code != AIBotErrInvalidReqID {
		t.Errorf("welcome on a message's req_id: errcode %d", code)
	}
	for i, fr := range []map[string]any{stream("s1", "", false, "fb-1"), stream("s1", "你", false, "fb-late"), stream("s1", "你好", true, "")} {
		if code := w.call("aibot_respond_msg", reqID, fr); code != 0 {
			t.Fatalf("frame %d: errcode %d", i, code)
		}
	}
	st, ok := f.sim.AIBotStreamOf(reqID)
	if !ok || st.StreamID != "s1" || st.Content != "你好" || st.Frames != 3 || st.FinishFrames != 1 || st.FeedbackID != "fb-1" {
		t.Errorf("stream %+v", st)
	}
	if v := f.sim.AIBotViolations(); len(v) != 0 {
		t.Errorf("violations from a clean stream: %v", v)
	}
	if code := w.call("aibot_respond_msg", "unknown", stream("s1", "x", true, "")); code != AIBotErrInvalidReqID {
		t.Errorf("unknown req_id: errcode %d", code)
	}

	// A shrinking stream, then one that expires.
	re, _ := f.sim.Redeliver(f.ctx, reqID)
	got, body = w.pushed("aibot_msg_callback")
	if got != re || re == reqID || body.MsgID != msg.MsgID {
		t.Fatalf("redelivered %s (was %s) %+v", got, reqID, body)
	}
	f.sim.ExpireStream(re, 2)
	w.call("aibot_respond_msg", re, stream("s2", "abc", false, ""))
	w.call("aibot_respond_msg", re, stream("s2", "ab", false, ""))
	if code := w.call("aibot_respond_msg", re, stream("s2", "abcd", true, "")); code != AIBotErrStreamExpired {
		t.Errorf("after ExpireStream: errcode %d", code)
	}
	if v := f.sim.AIBotViolations(); len(v) != 1 || !strings.Contains(v[0].Error(), "not cumulative") {
		t.Errorf("violations %v", v)
	}

	// A day after the callback its req_id takes no replies.
	old, _ := f.sim.Redeliver(f.ctx, reqID)
	w.pushed("aibot_msg_callback")
	f.clk.Advance(24*time.Hour + time.Second)
	if code := w.call("aibot_respond_msg", old, stream("s4", "a", true, "")); code != AIBotErrInvalidReqID {
		t.Errorf("a day later: errcode %d", code)
	}

	// Six minutes after its first frame a stream is dead.
	third, _ := f.sim.Redeliver(f.ctx, reqID)
	w.pushed("aibot_msg_callback")
	w.call("aibot_respond_msg", third, stream("s3", "a", false, ""))
	f.clk.Advance(6*time.Minute + time.Second)
	if code := w.call("aibot_respond_msg", third, stream("s3", "ab", true, "")); code != AIBotErrStreamExpired {
		t.Errorf("after 6 minutes: errcode %d", code)
	}
}

func TestAIBotWSEventsAndPushes(t *testing.T) {
	f := newWSFixture(t)
	w := f.dial(t)
	w.subscribe()

	reqID, err := f.sim.EnterChat(f.ctx, wsBot, "zhangsan")
	if err != nil {
		t.Fatal(err)
	}
	_, body := w.pushed("aibot_event_callback")
	if body.eventType() != "enter_chat" || body.ResponseURL != "" || body.CreateTime != f.clk.Now().Unix() {
		t.Errorf("enter_chat %+v", body)
	}
	if code := w.call("aibot_respond_msg", reqID, stream("s", "hi", true, "")); code != AIBotErrInvalidReqID {
		t.Errorf("a stream on enter_chat's req_id: errcode %d", code)
	}
	if code := w.call("aibot_respond_welcome_msg", reqID, map[string]any{"msgtype": "text", "text": map[string]string{"content": "hello"}}); code != 0 || !f.sim.AIBotWelcomed(reqID) {
		t.Errorf("welcome: errcode %d", code)
	}
	late, _ := f.sim.EnterChat(f.ctx, wsBot, "lisi")
	w.pushed("aibot_event_callback")
	f.clk.Advance(6 * time.Second)
	w.call("aibot_respond_welcome_msg", late, map[string]any{"msgtype": "text", "text": map[string]string{"content": "hello"}})
	if v := f.sim.AIBotViolations(); len(v) != 1 || !strings.Contains(v[0].Error(), "after enter_chat") {
		t.Errorf("a late welcome: violations %v", v)
	}

	push := map[string]any{"chatid": "zhangsan", "msgtype": "markdown", "markdown": map[string]string{"content": "news"}}
	if code := w.call("aibot_send_msg", "aibot_send_msg_1", push); code != AIBotErrNoConversation {
		t.Errorf("a push to a chat that never wrote: errcode %d", code)
	}
	if _, err := f.sim.Feedback(f.ctx, wsBot, "zhangsan", "fb-1", 2, 1, 3); err != nil {
		t.Fatal(err)
	}
	_, body = w.pushed("aibot_event_callback")
	if fb := body.Event["feedback_event"].(map[string]any); fb["id"] != "fb-1" || fb["type"] != float64(2) {
		t.Errorf("feedback %+v", body.Event)
	}
	if _, err := f.sim.DeliverMessage(f.ctx, wsBot, AIBotText("", "zhangsan", "hi")); err != nil {
		t.Fatal(err)
	}
	w.pushed("aibot_msg_callback")
	if code := w.call("aibot_send_msg", "aibot_send_msg_2", push); code != 0 {
		t.Errorf("a push after the user wrote: errcode %d", code)
	}
	if p := f.sim.AIBotPushes(); len(p) != 1 || p[0].ReqID != "aibot_send_msg_2" {
		t.Errorf("pushes %+v", p)
	}
}

func TestAIBotWSWithheldAcksAndDrop(t *testing.T) {
	f := newWSFixture(t)
	w := f.dial(t)
	w.subscribe()
	f.sim.WithholdAcks(wsBot)
	w.send("ping", "ping_1", nil)
	w.send("ping", "ping_2", nil)
	if err := f.sim.AIBotWait(f.ctx, func() bool { return len(f.sim.AIBotFrames("ping")) == 2 }); err != nil {
		t.Fatal(err)
	}
	if fr := f.sim.AIBotFrames("ping"); fr[0].Acked || fr[1].Acked {
		t.Errorf("withheld acks marked sent: %+v", fr)
	}
	if n := f.sim.ReleaseAcks(f.ctx, wsBot); n != 2 {
		t.Errorf("released %d acks", n)
	}
	for _, want := range []string{"ping_1", "ping_2"} {
		if got := w.read()["headers"].(map[string]any)["req_id"]; got != want {
			t.Errorf("ack for %v, want %s", got, want)
		}
	}

	if !f.sim.Drop(wsBot) {
		t.Fatal("Drop found no connection")
	}
	if _, _, err := w.c.Read(f.ctx); err == nil || websocket.CloseStatus(err) != -1 {
		t.Errorf("a dropped connection ended with %v, want no close frame", err)
	}
	if _, err := f.sim.DeliverMessage(f.ctx, wsBot, AIBotText("", "u", "x")); err != ErrNotConnected {
		t.Errorf("deliver without a connection: %v", err)
	}
	again := f.dial(t)
	again.subscribe()
	if n := f.sim.AIBotSubscribes(wsBot); n != 2 {
		t.Errorf("%d subscribes after reconnecting", n)
	}
}
