package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/redistest"
)

// The long connection is tested against the simulator's real WebSocket
// endpoint (httptest). Time is a fake clock shared by the service, the
// database and the simulator; the waits that decide what a test checks
// (a reply's pacing, a reconnect's backoff) are reported by the clock once
// armed, so the test moves time exactly then. What only the network
// decides (a frame arriving) is waited for with eventually.

const (
	wsTestBot    = "assistant"
	wsTestBotID  = "aibws0001"
	wsTestSecret = "ws-Secret-never-shown"
	// wsGuard bounds the waits on the service, so a broken one fails the
	// test rather than hanging it.
	wsGuard = 10 * time.Second
)

// waitClock is a fake clock that reports each short wait (a timer or
// After of at most wsFrameEvery: a reply's pacing, a reconnect's first
// backoff) once it is armed.
type waitClock struct {
	*clockwork.FakeClock
	waits chan time.Duration
}

func (c *waitClock) report(d time.Duration) {
	if d > 0 && d <= wsFrameEvery {
		select {
		case c.waits <- d:
		default: // nobody looks at that many
		}
	}
}

func (c *waitClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.report(d)
	return ch
}

func (c *waitClock) NewTimer(d time.Duration) clockwork.Timer {
	t := c.FakeClock.NewTimer(d)
	c.report(d)
	return t
}

// advanceOnWait waits for a wait of d to be armed and moves the clock past it.
func (c *waitClock) advanceOnWait(t *testing.T, d time.Duration) {
	t.Helper()
	guard := time.NewTimer(wsGuard)
	defer guard.Stop()
	for {
		select {
		case got := <-c.waits:
			if got == d {
				c.Advance(d)
				return
			}
		case <-guard.C:
			t.Fatalf("no wait of %v was armed", d)
		}
	}
}

// stepLLM is a streaming model the test drives piece by piece: say returns
// once the reply has taken the piece (sent its frame, if any).
type stepLLM struct {
	steps chan llmStep
	calls atomic.Int64
}

type llmStep struct {
	piece string
	end   bool
	done  chan struct{}
}

func newStepLLM() *stepLLM { return &stepLLM{steps: make(chan llmStep)} }

func (f *stepLLM) Complete(context.Context, []llm.Message) (string, error) {
	return "", errors.New("stepLLM: Complete called while streaming is on")
}

func (f *stepLLM) Stream(ctx context.Context, _ []llm.Message, onDelta func(string) error) (string, error) {
	f.calls.Add(1)
	var answer strings.Builder
	for {
		select {
		case s := <-f.steps:
			if s.end {
				close(s.done)
				return answer.String(), nil
			}
			answer.WriteString(s.piece)
			err := onDelta(s.piece)
			close(s.done)
			if err != nil {
				return "", err
			}
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (f *stepLLM) step(t *testing.T, s llmStep) {
	t.Helper()
	s.done = make(chan struct{})
	guard := time.NewTimer(wsGuard)
	defer guard.Stop()
	select {
	case f.steps <- s:
	case <-guard.C:
		t.Fatal("the model was not asked")
	}
	select {
	case <-s.done:
	case <-guard.C:
		t.Fatal("the reply did not take the piece")
	}
}

func (f *stepLLM) say(t *testing.T, piece string) { t.Helper(); f.step(t, llmStep{piece: piece}) }
func (f *stepLLM) end(t *testing.T)               { t.Helper(); f.step(t, llmStep{end: true}) }

// wsEnv is the simulator and the database that instances share.
type wsEnv struct {
	t     *testing.T
	sim   *wecomsim.Server
	clock *waitClock
	db    *storage.DB
	url   string
	logs  *tokLog // read while the instances write
	// redis, when set, is the Redis that instances with a database each
	// keep the connection lease in.
	redis *storage.Redis
}

func newWSEnv(t *testing.T) *wsEnv {
	t.Helper()
	clk := &waitClock{FakeClock: clockwork.NewFakeClock(), waits: make(chan time.Duration, 1000)}
	sim := wecomsim.New(wecomsim.Options{AIBots: []wecomsim.AIBot{{BotID: wsTestBotID, Secret: wsTestSecret}}, Now: clk.Now})
	ts := httptest.NewServer(sim.Handler())
	t.Cleanup(ts.Close)
	db := openTestDB(t)
	db.Now = clk.Now
	return &wsEnv{t: t, sim: sim, clock: clk, db: db, logs: &tokLog{},
		url: "ws" + strings.TrimPrefix(ts.URL, "http") + "/wecom" + wecomsim.AIBotWSPath}
}

// wsInstance is one service instance: an App with its metrics.
type wsInstance struct {
	*App
	reg  *prometheus.Registry
	stop func()
}

// start runs an instance. Exclusive: alone on the database (no lease);
// with e.redis, on a database of its own.
func (e *wsEnv) start(owner string, exclusive bool, model Completer, replies Replies) *wsInstance {
	e.t.Helper()
	return e.startWith(owner, exclusive, model, replies, LLMConfig{Stream: true, MaxConcurrency: 4, HistoryTurns: 10})
}

// startVision runs an instance alone on the database whose model, which
// sees images, answers whole.
func (e *wsEnv) startVision(model *visionModel) *wsInstance {
	e.t.Helper()
	return e.startWith("one", true, completeOnly{model.client()}, mediaReplies, LLMConfig{Vision: true})
}

func (e *wsEnv) startWith(owner string, exclusive bool, model Completer, replies Replies, llmCfg LLMConfig) *wsInstance {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	db := e.db
	var leases ConnectionLeases
	if e.redis != nil {
		db = openTestDB(e.t)
		db.Now = e.clock.Now
		leases = e.redis
	}
	a, err := New(Options{
		WeCom: WeComConfig{AIBotWSURL: e.url},
		Bots:  []BotConfig{{Name: wsTestBot, Kind: KindAIBot, Mode: ModeWebSocket, BotID: wsTestBotID, Secret: wsTestSecret}},
		Pipeline: PipelineConfig{LLM: llmCfg, Replies: replies,
			Owner: owner, Lease: 3 * time.Second, Exclusive: exclusive},
		Store: db, Leases: leases, LLM: model, Clock: e.clock, Metrics: m,
		Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", owner),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.Start(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wsGuard)
			defer cancel()
			if err := a.Shutdown(ctx); err != nil {
				e.t.Errorf("shutdown of %s: %v", owner, err)
			}
		})
	}
	e.t.Cleanup(stop)
	return &wsInstance{App: a, reg: reg, stop: stop}
}

// metric is the value of the bot's sample of name (0 when there is none).
func (in *wsInstance) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{"bot": wsTestBot}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	v, _ := tokMetric(t, in.reg, name, want)
	return v
}

// connection is the instance's view of the bot's long connection.
func (in *wsInstance) connection() ConnectionStatus {
	s := in.Bots()[0]
	if s.Connection == nil {
		return ConnectionStatus{}
	}
	return *s.Connection
}

func (e *wsEnv) connected(in *wsInstance) {
	e.t.Helper()
	eventually.True(e.t, func() bool {
		s := in.connection()
		return s.State == string(aibot.StateConnected) && s.Holder
	}, "the instance did not connect: %+v", in.connection())
}

// deliver pushes body as WeCom does and returns its req_id.
func (e *wsEnv) deliver(body wecomsim.AIBotBody) string {
	e.t.Helper()
	req, err := e.sim.DeliverMessage(e.t.Context(), wsTestBotID, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return req
}

func (e *wsEnv) stream(req string) wecomsim.AIBotStream {
	e.t.Helper()
	s, ok := e.sim.AIBotStreamOf(req)
	if !ok {
		e.t.Fatalf("the simulator never issued %s", req)
	}
	return s
}

// finished waits for the stream of req to end and returns it.
func (e *wsEnv) finished(req string) wecomsim.AIBotStream {
	e.t.Helper()
	eventually.True(e.t, func() bool { return e.stream(req).FinishFrames > 0 }, "stream %s never finished: %+v", req, e.stream(req))
	return e.stream(req)
}

func (e *wsEnv) noViolations() {
	e.t.Helper()
	if v := e.sim.AIBotViolations(); len(v) > 0 {
		e.t.Errorf("protocol violations: %v", v)
	}
}

// pushed waits for n aibot_send_msg messages and returns their bodies.
func (e *wsEnv) pushed(n int) []aibot.SendMsg {
	e.t.Helper()
	eventually.True(e.t, func() bool { return len(e.sim.AIBotPushes()) >= n }, "want %d aibot_send_msg, got %d", n, len(e.sim.AIBotPushes()))
	var out []aibot.SendMsg
	for _, f := range e.sim.AIBotPushes() {
		var m aibot.SendMsg
		if err := json.Unmarshal(f.Body, &m); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	if len(out) != n {
		e.t.Fatalf("%d aibot_send_msg, want %d", len(out), n)
	}
	return out
}

func TestAIBotWSStreamsAnswer(t *testing.T) {
	e := newWSEnv(t)
	model := newStepLLM()
	in := e.start("one", true, model, testReplies)
	e.connected(in)

	body := wecomsim.AIBotText(wsTestBotID, "zhangsan", "hi")
	req := e.deliver(body)
	sid := streamID(wsTestBot, body.MsgID)

	model.say(t, "Hel")
	s := e.stream(req)
	if s.Frames != 1 || s.Content != "Hel" || s.StreamID != sid || s.FeedbackID != sid || s.FinishFrames != 0 {
		t.Fatalf("first frame: %+v", s)
	}
	eventually.True(t, func() bool {
		m, err := e.db.GetMessage(t.Context(), 1)
		return err == nil && m.State == storage.MessageStreaming
	}, "message not marked streaming once shown")

	// Within 2 s of the first frame, pieces wait for the next.
	model.say(t, "lo")
	model.say(t, " world")
	if s := e.stream(req); s.Frames != 1 {
		t.Fatalf("a frame within 2 s of the last: %+v", s)
	}
	e.clock.Advance(wsFrameEvery)
	model.say(t, "!")
	if s := e.stream(req); s.Frames != 2 || s.Content != "Hello world!" {
		t.Fatalf("second frame: %+v", s)
	}
	// The end right after a frame: the finishing frame waits its 2 s.
	model.end(t)
	e.clock.advanceOnWait(t, wsFrameEvery)
	s = e.finished(req)
	if s.Frames != 3 || s.FinishFrames != 1 || s.Content != "Hello world!" {
		t.Fatalf("final stream: %+v", s)
	}
	frames := e.sim.AIBotFrames(aibot.CmdRespondMsg)
	for i := 1; i < len(frames); i++ {
		if gap := frames[i].At.Sub(frames[i-1].At); gap < wsFrameEvery {
			t.Errorf("frames %d and %d %v apart", i-1, i, gap)
		}
	}
	if len(e.sim.AIBotPushes()) != 0 || model.calls.Load() != 1 {
		t.Errorf("%d pushes, %d model calls", len(e.sim.AIBotPushes()), model.calls.Load())
	}
	e.noViolations()

	// Feedback on the answer is stored with it and counted.
	fb, err := e.sim.Feedback(t.Context(), wsTestBotID, "zhangsan", sid, aibot.FeedbackInaccurate, 2)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool {
		st, err := e.db.GetAIBotStream(t.Context(), wsTestBot, sid)
		return err == nil && st.Feedback.Type == aibot.FeedbackInaccurate && st.Feedback.Note == "incomplete"
	}, "feedback not stored")
	// The same event again (as after a reconnect) is not counted twice:
	// once a later message is answered, it was handled.
	if _, err := e.sim.Redeliver(t.Context(), fb); err != nil {
		t.Fatal(err)
	}
	later := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "later"))
	model.say(t, "ok")
	model.end(t)
	e.clock.advanceOnWait(t, wsFrameEvery)
	e.finished(later)
	if n := in.metric(t, "wecombot_feedback_total", "type", "inaccurate"); n != 1 {
		t.Errorf("feedback metric %v", n)
	}
	// The gauge follows the status on the instance's ticker.
	e.clock.Advance(time.Second)
	eventually.True(t, func() bool { return in.metric(t, "wecombot_aibot_connected") == 1 }, "connected gauge")
	status, _ := json.Marshal(in.Bots())
	if strings.Contains(e.logs.String(), wsTestSecret) || strings.Contains(string(status), wsTestSecret) {
		t.Error("the secret shows in the logs or the status")
	}
}

// A message redelivered after a reconnect (same msgid, new req_id) is not
// answered again.
func TestAIBotWSRedeliveryNotAnsweredTwice(t *testing.T) {
	e := newWSEnv(t)
	llmCalls := atomic.Int64{}
	in := e.start("one", true, &completerFake{complete: func(ctx context.Context, msgs []llm.Message) (string, error) {
		llmCalls.Add(1)
		return echoAnswer(ctx, msgs)
	}}, testReplies)
	e.connected(in)
	first := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "hi"))
	if s := e.finished(first); s.Content != "answer to hi" || s.Frames != 1 {
		t.Fatalf("answer: %+v", s)
	}

	// The answer is stored once its last frame is acked: a link dropped
	// before the ack leaves it unknown whether the frame was shown, and the
	// answer goes again by aibot_send_msg.
	eventually.True(t, func() bool {
		m, err := e.db.GetMessage(t.Context(), 1)
		return err == nil && m.State == storage.MessageAnswered
	}, "the answer is not stored")
	if !e.sim.Drop(wsTestBotID) {
		t.Fatal("no connection to drop")
	}
	e.clock.advanceOnWait(t, time.Second) // the first backoff
	eventually.True(t, func() bool {
		c, ok := e.sim.AIBotConnection(wsTestBotID)
		return ok && c.ID == 2 && in.connection().State == string(aibot.StateConnected)
	}, "no reconnect: %+v", in.connection())
	if s := in.connection(); s.Reconnects != 1 || s.LastError == "" {
		t.Errorf("status after a reconnect: %+v", s)
	}
	e.clock.Advance(time.Second) // the metrics follow on the instance's ticker
	eventually.True(t, func() bool { return in.metric(t, "wecombot_aibot_reconnects_total") == 1 }, "reconnects metric")

	again, err := e.sim.Redeliver(t.Context(), first)
	if err != nil {
		t.Fatal(err)
	}
	// A later message shows the redelivery was handled (frames are taken
	// in order) without an answer.
	later := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "more"))
	e.finished(later)
	if s := e.stream(again); s.Frames != 0 || llmCalls.Load() != 2 || len(e.sim.AIBotPushes()) != 0 {
		t.Fatalf("redelivery answered: %+v, %d model calls, pushes %+v", s, llmCalls.Load(), e.sim.AIBotPushes())
	}
	e.noViolations()
}

// 846608: the stream expired; what it did not show goes by aibot_send_msg.
func TestAIBotWSExpiredStreamContinuesBySend(t *testing.T) {
	e := newWSEnv(t)
	model := newStepLLM()
	in := e.start("one", true, model, testReplies)
	e.connected(in)
	req := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "long question"))
	e.sim.ExpireStream(req, 1)

	model.say(t, "part one, ")
	e.clock.Advance(wsFrameEvery)
	model.say(t, "part two")
	model.end(t)
	pushes := e.pushed(1)
	if s := e.stream(req); s.Content != "part one, " || s.FinishFrames != 0 {
		t.Errorf("stream: %+v", s)
	}
	if p := pushes[0]; p.ChatID != "zhangsan" || p.MsgType != "markdown" || p.Markdown.Content != "part two" {
		t.Errorf("push: %+v", p)
	}
	e.noViolations()
}

// An answer over 20480 bytes: the stream carries what fits, cut on a
// character, the rest goes by aibot_send_msg.
func TestAIBotWSLongAnswerContinuesBySend(t *testing.T) {
	e := newWSEnv(t)
	answer := strings.Repeat("长回答", 3000) + "🙂 end" // 27,000+ bytes
	in := e.start("one", true, &completerFake{complete: func(context.Context, []llm.Message) (string, error) {
		return answer, nil
	}}, testReplies)
	e.connected(in)
	group := wecomsim.AIBotGroupText(wsTestBotID, "wrgroup1", "lisi", "Bot", "tell me")
	req := e.deliver(group)
	s := e.finished(req)
	pushes := e.pushed(1)
	if len(s.Content) > aibot.MaxStreamBytes || s.Content+pushes[0].Markdown.Content != answer {
		t.Fatalf("stream of %d bytes and push of %d do not make the answer", len(s.Content), len(pushes[0].Markdown.Content))
	}
	if pushes[0].ChatID != "wrgroup1" {
		t.Errorf("pushed to %q, want the group", pushes[0].ChatID)
	}
	e.noViolations()
}

// A streamed answer that outgrows the stream: the stream ends full, the
// rest follows by aibot_send_msg.
func TestAIBotWSStreamOutgrowsLimit(t *testing.T) {
	e := newWSEnv(t)
	model := newStepLLM()
	in := e.start("one", true, model, testReplies)
	e.connected(in)
	req := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "write a lot"))
	first := strings.Repeat("流", aibot.MaxStreamBytes/3-1) // 20,475 bytes
	model.say(t, first)
	e.clock.Advance(wsFrameEvery)
	model.say(t, "式回答") // 9 bytes: over the limit in the middle of a character
	s := e.stream(req)
	if s.FinishFrames != 1 || s.Content != first+"式" {
		t.Fatalf("the full stream did not end: %d bytes, %d finish frames", len(s.Content), s.FinishFrames)
	}
	model.say(t, " and more")
	model.end(t)
	if p := e.pushed(1)[0]; p.Markdown.Content != "回答 and more" {
		t.Errorf("push %q", p.Markdown.Content)
	}
	if s := e.stream(req); s.Frames != 2 {
		t.Errorf("%d frames, want 2", s.Frames)
	}
	e.noViolations()
}

// Groups: the @mention is stripped, the sender marked, one conversation per
// group.
func TestAIBotWSGroupMention(t *testing.T) {
	e := newWSEnv(t)
	in := e.start("one", true, &completerFake{complete: echoAnswer}, testReplies)
	e.connected(in)
	req := e.deliver(wecomsim.AIBotGroupText(wsTestBotID, "wrgroup1", "lisi", "Bot", "hello there"))
	if s := e.finished(req); s.Content != "answer to lisi: hello there" {
		t.Fatalf("answer: %+v", s)
	}
	m, err := e.db.GetMessage(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.UserID != "chat:wrgroup1" || m.Content != "lisi: hello there" {
		t.Errorf("stored %q from %q", m.Content, m.UserID)
	}
	e.noViolations()
}

func TestAIBotWSWelcome(t *testing.T) {
	for _, welcome := range []string{"welcome!", ""} {
		t.Run(fmt.Sprintf("%q", welcome), func(t *testing.T) {
			e := newWSEnv(t)
			replies := testReplies
			replies.Welcome = welcome
			in := e.start("one", true, &completerFake{complete: echoAnswer}, replies)
			e.connected(in)
			req, err := e.sim.EnterChat(t.Context(), wsTestBotID, "zhangsan")
			if err != nil {
				t.Fatal(err)
			}
			if welcome != "" {
				eventually.True(t, func() bool { return e.sim.AIBotWelcomed(req) }, "no welcome")
			} else {
				// Frames are taken in order: once a later message is
				// answered, the event was handled.
				e.finished(e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "hi")))
				if f := e.sim.AIBotFrames(aibot.CmdRespondWelcome); len(f) != 0 {
					t.Errorf("an empty welcome was sent: %+v", f)
				}
			}
			if f := e.sim.AIBotFrames(aibot.CmdRespondMsg); welcome != "" && len(f) != 0 {
				t.Errorf("enter_chat answered with a stream: %+v", f)
			}
			e.noViolations()
		})
	}
}

// disconnected_event: another connection took the bot; no reconnect.
func TestAIBotWSReplacedDoesNotReconnect(t *testing.T) {
	e := newWSEnv(t)
	in := e.start("one", true, &completerFake{complete: echoAnswer}, testReplies)
	e.connected(in)

	other, _, err := websocket.Dial(t.Context(), e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.CloseNow()
	sub := map[string]any{"cmd": aibot.CmdSubscribe, "headers": map[string]string{"req_id": "other_1"},
		"body": map[string]string{"bot_id": wsTestBotID, "secret": wsTestSecret}}
	if err := wsjson.Write(t.Context(), other, sub); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return in.connection().State == string(aibot.StateReplaced) }, "not replaced: %+v", in.connection())
	for range 3 {
		e.clock.Advance(time.Minute)
	}
	if n := e.sim.AIBotSubscribes(wsTestBotID); n != 2 {
		t.Errorf("%d subscribes, want 2 (ours, then the other's)", n)
	}
	if s := in.connection(); s.State != string(aibot.StateReplaced) || !strings.Contains(s.LastError, "another connection") {
		t.Errorf("status %+v", s)
	}
	eventually.True(t, func() bool { return in.metric(t, "wecombot_aibot_connected") == 0 }, "connected gauge")
}

// Two instances: one holds the connection; when it dies, the other
// connects once its lease has expired. On one database the lease is there;
// instances with a database each (SQLite) keep it in Redis.
func TestAIBotWSFailover(t *testing.T) {
	t.Run("one database", func(t *testing.T) {
		e := newWSEnv(t)
		testFailover(t, e, func(until time.Time) (bool, error) {
			return e.db.ClaimUser(t.Context(), storage.UserRef{Bot: wsTestBot, UserID: connectionUser}, "instance-0", until)
		})
	})
	t.Run("a database each and Redis", func(t *testing.T) {
		e := newWSEnv(t)
		e.redis = storage.OpenRedis(redistest.Start(t).Addr)
		t.Cleanup(func() { e.redis.Close() })
		testFailover(t, e, func(until time.Time) (bool, error) {
			return e.redis.ClaimLease(t.Context(), "wecombot:connection:"+wsTestBot, "instance-0", e.clock.Now(), until)
		})
	})
}

// testFailover runs two instances in e; restore puts back the first's
// lease until then, as it was when it died.
func testFailover(t *testing.T, e *wsEnv, restore func(until time.Time) (bool, error)) {
	model := &completerFake{complete: echoAnswer}
	first := e.start("instance-0", e.redis != nil, model, testReplies)
	e.connected(first)
	second := e.start("instance-1", e.redis != nil, model, testReplies)
	eventually.True(t, func() bool { return second.connection().State == StateStandby }, "second: %+v", second.connection())
	eventually.True(t, func() bool {
		_, ok := tokMetric(t, second.reg, "wecombot_aibot_connected", map[string]string{"bot": wsTestBot})
		return ok
	}, "the standby has no connected gauge")
	if n := second.metric(t, "wecombot_aibot_connected"); n != 0 {
		t.Errorf("standby connected gauge %v, want 0", n)
	}
	if s := second.connection(); s.Holder {
		t.Fatalf("both hold the connection: %+v", s)
	}

	if s := e.finished(e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "one"))); s.Content != "answer to one" {
		t.Fatalf("answer: %+v", s)
	}

	// The first dies: its connection ends and its lease stays until it
	// expires, as after a crash.
	first.stop()
	if ok, err := restore(e.clock.Now().Add(3 * time.Second)); err != nil || !ok {
		t.Fatalf("restore the dead instance's lease: %v %v", ok, err)
	}
	standby := func() int {
		return strings.Count(e.logs.String(), `msg="another instance holds the long connection; standing by" instance=instance-1`)
	}
	for range 3 { // a claim every third of the lease, each refused
		n := standby()
		e.clock.Advance(time.Second)
		eventually.True(t, func() bool { return standby() > n }, "the second did not try to claim the lease")
	}
	if e.sim.AIBotSubscribes(wsTestBotID) != 1 || second.connection().Holder {
		t.Fatalf("the second connected before the lease expired: %+v", second.connection())
	}
	e.clock.Advance(time.Second)
	e.connected(second)

	if s := e.finished(e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "two"))); s.Content != "answer to two" {
		t.Fatalf("answer after failover: %+v", s)
	}
	if n := e.sim.AIBotSubscribes(wsTestBotID); n != 2 {
		t.Errorf("%d subscribes, want 2", n)
	}
	e.noViolations()
}

// A message whose req_id this instance does not know (accepted before a
// restart) is answered whole by aibot_send_msg; a chat that never wrote to
// the bot refuses it, and the refusal is final.
func TestAIBotWSUnknownReqIDAnswersBySend(t *testing.T) {
	e := newWSEnv(t)
	in := e.start("one", true, &completerFake{complete: echoAnswer}, testReplies)
	e.connected(in)
	e.finished(e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "hi")))

	for _, m := range []Inbound{
		{Bot: wsTestBot, UserID: "zhangsan", MsgType: "text", Content: "from before", DedupeKey: "old-1"},
		{Bot: wsTestBot, UserID: "stranger", MsgType: "text", Content: "never wrote", DedupeKey: "old-2"},
	} {
		if ok, err := in.pipeline.Accept(t.Context(), m); err != nil || !ok {
			t.Fatalf("accept: %v %v", ok, err)
		}
	}
	pushes := e.pushed(1)
	if p := pushes[0]; p.ChatID != "zhangsan" || p.Markdown.Content != "answer to from before" {
		t.Errorf("push: %+v", p)
	}
	// The admin's send goes the same way.
	if err := in.Send(t.Context(), wsTestBot, "zhangsan", "from the admin"); err != nil {
		t.Fatal(err)
	}
	if p := e.pushed(2)[1]; p.ChatID != "zhangsan" || p.Markdown.Content != "from the admin" {
		t.Errorf("admin push: %+v", p)
	}
	eventually.True(t, func() bool {
		m, err := e.db.GetMessage(t.Context(), 3)
		return err == nil && m.State == storage.MessageFailed
	}, "the refused push is not final")
	if v := e.sim.AIBotViolations(); len(v) != 1 {
		t.Errorf("violations %v, want only the push to the stranger", v)
	}
}

// A crash while an answer streams: the next start ends it with
// replies.interrupted, sent as a message.
func TestAIBotWSInterruptedAfterCrash(t *testing.T) {
	e := newWSEnv(t)
	replies := testReplies
	replies.Interrupted = "interrupted, ask again"
	model := newStepLLM()
	first := e.start("one", true, model, replies)
	e.connected(first)
	req := e.deliver(wecomsim.AIBotText(wsTestBotID, "zhangsan", "hi"))
	model.say(t, "The start")
	if s := e.stream(req); s.Content != "The start" {
		t.Fatalf("stream: %+v", s)
	}
	// Stopped without waiting for the answer, as a crash leaves it.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = first.Shutdown(ctx)

	second := e.start("one", true, &completerFake{complete: echoAnswer}, replies)
	e.connected(second)
	if p := e.pushedRetrying(1, 1)[0]; p.ChatID != "zhangsan" || p.Markdown.Content != "interrupted, ask again" {
		t.Errorf("push: %+v", p)
	}
	if model.calls.Load() != 1 {
		t.Errorf("the model was asked again")
	}
	e.noViolations()
}

// pushedRetrying waits for n aibot_send_msg messages as pushed does, the
// part of message id being one of them: tried before the link was up, it
// waits for its retry, which the clock brings.
func (e *wsEnv) pushedRetrying(n int, id int64) []aibot.SendMsg {
	e.t.Helper()
	eventually.True(e.t, func() bool {
		if len(e.sim.AIBotPushes()) >= n {
			return true
		}
		parts, err := e.db.PartsOf(e.t.Context(), id)
		if err == nil && len(parts) == 1 && parts[0].LastError != "" {
			if wait := parts[0].NextAttemptAt.Sub(e.clock.Now()); wait > 0 {
				e.clock.Advance(wait)
			}
		}
		return false
	}, "message %d was not sent", id)
	return e.pushed(n)
}
