package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

const (
	aiBotName = "assistant"
	aiBotID   = "aib-test-0001"
	aiToken   = "aitoken"
)

// streamModel is a streaming fake model: it answers answer(question) in a
// few deltas, the first before it waits for gate (when set).
type streamModel struct {
	answer  func(question string) string
	gate    chan struct{} // nil: answer at once
	entered chan string   // the question, once the first delta is out
	calls   atomic.Int32
}

func (m *streamModel) Complete(ctx context.Context, msgs []llm.Message) (string, error) {
	return m.Stream(ctx, msgs, func(string) error { return nil })
}

func (m *streamModel) Stream(ctx context.Context, msgs []llm.Message, onDelta func(string) error) (string, error) {
	m.calls.Add(1)
	q := msgs[len(msgs)-1].Content
	a := m.answer(q)
	cut := len(a) / 2
	for cut > 0 && !utf8.RuneStart(a[cut]) {
		cut--
	}
	if err := onDelta(a[:cut]); err != nil {
		return "", err
	}
	if m.entered != nil {
		m.entered <- q
	}
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err := onDelta(a[cut:]); err != nil {
		return "", err
	}
	return a, nil
}

type aibotEnv struct {
	t       *testing.T
	store   *storage.DB
	sim     *wecomsim.Server
	cb      *wecomsim.AIBotCallback
	app     *App
	model   *streamModel
	clock   clockwork.Clock
	metrics *Metrics
	replies Replies
	// instances behind one URL, each request to the next (default 1); with
	// several, none of them has the database to itself.
	instances int
	served    [4]atomic.Int64 // requests each instance served
	// vision and completer (instead of model), when set: images.
	vision    bool
	completer Completer
	// simNow, when set, is the simulator's clock.
	simNow func() time.Time

	bot     BotConfig
	mu      sync.Mutex     // guards engines
	engines []http.Handler // the instances' routes, behind one URL
}

type aibotEnvOption func(*aibotEnv, *BotConfig)

func newAIBotEnv(t *testing.T, opts ...aibotEnvOption) *aibotEnv {
	t.Helper()
	e := &aibotEnv{t: t, clock: clockwork.NewRealClock(),
		model:   &streamModel{answer: func(q string) string { return "echo: " + q }},
		replies: Replies{Welcome: "欢迎！", TextOnly: "text only", Interrupted: "interrupted", Unavailable: "unavailable", Continued: "more follows"},
	}
	bc := BotConfig{Name: aiBotName, Kind: KindAIBot, Mode: ModeCallback, Token: aiToken, EncodingAESKey: wecomsim.NewEncodingAESKey()}
	for _, o := range opts {
		o(e, &bc)
	}
	e.store = openTestDB(t)
	e.sim = wecomsim.New(wecomsim.Options{Now: e.simNow})
	simSrv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(simSrv.Close)
	e.metrics = NewMetrics(prometheus.NewRegistry())
	var completer Completer = e.model
	if e.completer != nil {
		completer = e.completer
	}
	instances := max(e.instances, 1)
	e.engines = make([]http.Handler, instances)
	for i := range instances {
		app, engine := e.newApp(bc, fmt.Sprint("instance-", i), instances == 1, completer, simSrv.URL)
		if i == 0 {
			e.app = app
		}
		e.engines[i] = engine
	}
	// A load balancer that hands each request to the next instance.
	var next atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := next.Add(1) - 1
		e.served[i%int64(instances)].Add(1)
		e.mu.Lock()
		engine := e.engines[i%int64(instances)]
		e.mu.Unlock()
		engine.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.bot = bc
	e.cb = &wecomsim.AIBotCallback{
		URL: srv.URL + "/wecom/" + aiBotName + "/callback", Token: aiToken, EncodingAESKey: bc.EncodingAESKey,
		BotID: aiBotID, Sim: e.sim, SimURL: simSrv.URL, Clock: e.clock, PollInterval: 5 * time.Millisecond,
	}
	return e
}

// newApp starts an instance of the bot on the env's database, answered by
// completer, and returns it with its routes.
func (e *aibotEnv) newApp(bc BotConfig, owner string, exclusive bool, completer Completer, simURL string) (*App, http.Handler) {
	e.t.Helper()
	app, err := New(Options{
		WeCom:    WeComConfig{APIBase: simURL, RequestTimeout: config.Duration(5 * time.Second)},
		Bots:     []BotConfig{bc},
		Store:    e.store,
		Pipeline: PipelineConfig{LLM: LLMConfig{Stream: true, Vision: e.vision}, Replies: e.replies, Exclusive: exclusive, Owner: owner},
		LLM:      completer,
		Clock:    e.clock,
		Log:      slog.New(slog.DiscardHandler),
		Metrics:  e.metrics,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := app.Start(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	gin.SetMode(gin.TestMode)
	engine := gin.New()
	app.Routes(engine)
	return app, engine
}

// restart stops the (only) instance without waiting for what it is
// answering, as a crash leaves it, and puts in its place a new one on the
// same database answered by completer.
func (e *aibotEnv) restart(completer Completer) *App {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.t.Context())
	cancel()
	_ = e.app.Shutdown(ctx)
	app, engine := e.newApp(e.bot, "instance-0", true, completer, e.cb.SimURL)
	e.mu.Lock()
	e.app, e.engines[0] = app, engine
	e.mu.Unlock()
	return app
}

// post delivers msg and polls its stream to the end, failing the test on
// any breach of the protocol.
func (e *aibotEnv) post(msg wecomsim.AIBotBody) *wecomsim.AIBotExchange {
	e.t.Helper()
	ex := e.cb.Post(e.t.Context(), msg)
	if err := ex.Err(); err != nil {
		e.t.Fatalf("exchange: %v", err)
	}
	return ex
}

// messages returns the AI bot's stored messages, oldest first.
func (e *aibotEnv) messages() ([]storage.Message, error) {
	latest, err := e.store.LatestMessages(e.t.Context(), storage.MessageFilter{Bot: aiBotName})
	out := make([]storage.Message, len(latest))
	for i, m := range latest {
		out[len(latest)-1-i] = m.Message
	}
	return out, err
}

func last(t *testing.T, ex *wecomsim.AIBotExchange) wecomsim.AIBotReply {
	t.Helper()
	r, ok := ex.Last()
	if !ok {
		t.Fatal("no reply")
	}
	return r
}

func TestAIBotCallbackVerifiesURL(t *testing.T) {
	e := newAIBotEnv(t)
	for _, echo := range []string{"plain-echo", "with+plus/slash=eq", "汉字"} {
		status, body, err := e.cb.VerifyURL(t.Context(), echo)
		if err != nil || status != http.StatusOK || body != echo {
			t.Errorf("verify %q = %d %q %v", echo, status, body, err)
		}
	}
	bad := *e.cb
	bad.Token = "another-token"
	if status, body, _ := bad.VerifyURL(t.Context(), "x"); status != http.StatusForbidden || strings.Contains(body, "x") {
		t.Errorf("verify with a wrong token = %d %q, want 403 without the echostr", status, body)
	}
}

func TestAIBotCallbackStreamsTheAnswer(t *testing.T) {
	e := newAIBotEnv(t)
	ex := e.post(wecomsim.AIBotText("", "zhangsan", "你好"))
	replies := ex.Replies()
	first := replies[0]
	if first.MsgType != "stream" || first.Finish || first.StreamID == "" || first.FeedbackID == "" {
		t.Fatalf("first reply = %+v, want an unfinished stream with an id and a feedback id", first)
	}
	if r := last(t, ex); !r.Finish || r.Content != "echo: 你好" || r.StreamID != first.StreamID {
		t.Fatalf("last reply = %+v", r)
	}
	for _, r := range replies[1:] {
		if r.FeedbackID != "" {
			t.Errorf("a refresh carried the feedback id again: %+v", r)
		}
	}
	msgs, err := e.messages()
	if err != nil || len(msgs) != 1 || msgs[0].UserID != "zhangsan" || msgs[0].State != storage.MessageAnswered {
		t.Fatalf("stored messages = %+v, %v", msgs, err)
	}
	// Polls after the end still get the final text.
	again := e.post(wecomsim.AIBotRefresh(wecomsim.AIBotText(aiBotID, "zhangsan", "x"), first.StreamID))
	if r := last(t, again); !r.Finish || r.Content != "echo: 你好" {
		t.Errorf("a late poll = %+v", r)
	}
}

func TestAIBotCallbackRepeatIsAnsweredOnce(t *testing.T) {
	e := newAIBotEnv(t)
	e.model.gate = make(chan struct{})
	release := sync.OnceFunc(func() { close(e.model.gate) })
	t.Cleanup(release)
	e.model.entered = make(chan string, 1)
	msg := e.cb.WithResponseURL(wecomsim.AIBotText("", "lisi", "question"))
	first := e.cb.Start(t.Context(), msg)
	<-e.model.entered
	// The same callback again while the model works, then after.
	second := e.cb.Start(t.Context(), msg)
	release()
	<-first.Done()
	<-second.Done()
	third := e.post(msg)
	var ids []string
	for _, ex := range []*wecomsim.AIBotExchange{first, second, third} {
		if err := ex.Err(); err != nil {
			t.Fatal(err)
		}
		r := last(t, ex)
		if !r.Finish || r.Content != "echo: question" {
			t.Errorf("reply = %+v", r)
		}
		ids = append(ids, ex.Replies()[0].StreamID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("stream ids %v, want one", ids)
	}
	if n := e.model.calls.Load(); n != 1 {
		t.Errorf("model called %d times, want 1", n)
	}
}

func TestAIBotCallbackUnknownStreamIsFinished(t *testing.T) {
	e := newAIBotEnv(t)
	ex := e.post(wecomsim.AIBotRefresh(wecomsim.AIBotText(aiBotID, "u", "x"), "no-such-stream"))
	if r := last(t, ex); r.MsgType != "stream" || !r.Finish || r.StreamID != "no-such-stream" {
		t.Errorf("refresh of an unknown stream = %+v", r)
	}
}

func TestAIBotCallbackLongAnswerOverflowsToResponseURL(t *testing.T) {
	e := newAIBotEnv(t)
	long := strings.Repeat("很长的回答😀", 1500) // 33,000 bytes, a 4-byte emoji at every cut
	e.model.answer = func(string) string { return long }
	ex := e.post(e.cb.WithResponseURL(wecomsim.AIBotText("", "wangwu", "write a lot")))
	r := last(t, ex)
	if !r.Finish || len(r.Content) > 20480 || !utf8.ValidString(r.Content) || !strings.HasPrefix(long, r.Content) {
		t.Fatalf("stream: finish %v, %d bytes, valid %v", r.Finish, len(r.Content), utf8.ValidString(r.Content))
	}
	eventually.True(t, func() bool { return len(e.sim.AIBotResponses(ex.MsgID)) == 1 }, "one response_url call")
	got := e.sim.AIBotResponses(ex.MsgID)[0]
	if got.ErrCode != 0 || got.MsgType != "markdown" || r.Content+got.Content != long {
		t.Errorf("response_url got %d bytes (errcode %d); stream+response = the answer: %v", len(got.Content), got.ErrCode, r.Content+got.Content == long)
	}
}

func TestAIBotCallbackEvents(t *testing.T) {
	e := newAIBotEnv(t)
	ex := e.post(wecomsim.AIBotEnterChat(aiBotID, "zhaoliu", time.Now()))
	if r := last(t, ex); r.MsgType != "text" || r.Content != "欢迎！" {
		t.Errorf("enter_chat = %+v, want the welcome text", r)
	}

	quiet := newAIBotEnv(t, func(e *aibotEnv, _ *BotConfig) { e.replies.Welcome = "" })
	ex = quiet.post(wecomsim.AIBotEnterChat(aiBotID, "zhaoliu", time.Now()))
	if r := last(t, ex); !r.Empty {
		t.Errorf("enter_chat without a welcome = %+v, want the empty reply", r)
	}

	answered := e.post(wecomsim.AIBotText("", "zhaoliu", "q"))
	fid := answered.Replies()[0].FeedbackID
	ex = e.post(wecomsim.AIBotFeedback(aiBotID, "zhaoliu", fid, 2, "太短", []int{2, 9}, time.Now()))
	if r := last(t, ex); !r.Empty {
		t.Errorf("feedback_event = %+v, want the empty reply", r)
	}
	s, err := e.store.GetAIBotStream(t.Context(), aiBotName, answered.Replies()[0].StreamID)
	if err != nil || s.Feedback.Type != 2 || s.Feedback.Note != "incomplete, reason 9: 太短" {
		t.Errorf("stored feedback = %+v, %v", s.Feedback, err)
	}
	if n := testutil.ToFloat64(e.metrics.feedbacks.WithLabelValues(aiBotName, "inaccurate")); n != 1 {
		t.Errorf("wecombot_feedback_total{type=inaccurate} = %v", n)
	}
	// Feedback on an unknown answer changes nothing.
	e.post(wecomsim.AIBotFeedback(aiBotID, "zhaoliu", "unknown", 1, "", nil, time.Now()))
	if n := testutil.ToFloat64(e.metrics.feedbacks.WithLabelValues(aiBotName, "accurate")); n != 0 {
		t.Errorf("feedback on an unknown answer counted: %v", n)
	}
}

func TestAIBotCallbackGroupsAndTypes(t *testing.T) {
	e := newAIBotEnv(t)
	ex := e.post(wecomsim.AIBotGroupText(aiBotID, "chat-1", "alice", "助手", "what is up?"))
	if r := last(t, ex); r.Content != "echo: alice: what is up?" {
		t.Errorf("group answer = %q", r.Content)
	}
	e.post(wecomsim.AIBotGroupText(aiBotID, "chat-1", "bob", "助手", "and now?"))
	msgs, err := e.messages()
	if err != nil || len(msgs) != 2 || msgs[0].UserID != "chat:chat-1" || msgs[1].UserID != "chat:chat-1" {
		t.Fatalf("group messages = %+v, %v", msgs, err)
	}
	// One conversation for the group: bob's turn comes with alice's.
	h, err := e.store.History(t.Context(), aiBotName, "chat:chat-1", 10)
	if err != nil || len(h) != 4 || h[0].Content != "alice: what is up?" || h[2].Content != "bob: and now?" {
		t.Errorf("group history = %+v, %v", h, err)
	}

	if r := last(t, e.post(wecomsim.AIBotVoice(aiBotID, "carol", "语音转写"))); r.Content != "echo: 语音转写" {
		t.Errorf("voice answer = %q", r.Content)
	}
	if r := last(t, e.post(wecomsim.AIBotImage(aiBotID, "carol", "https://example.invalid/i"))); !r.Finish || r.Content != "text only" {
		t.Errorf("image answer = %+v", r)
	}
	if n := e.model.calls.Load(); n != 3 {
		t.Errorf("model calls = %d, want 3 (two group texts and the voice)", n)
	}
}

func TestAIBotCallbackRefusals(t *testing.T) {
	e := newAIBotEnv(t, func(_ *aibotEnv, bc *BotConfig) { bc.BotID = aiBotID })
	other := *e.cb
	other.BotID = "another-bot"
	status, _, err := other.PostRaw(t.Context(), wecomsim.AIBotText("another-bot", "u", "hi").JSON())
	if err != nil || status != http.StatusForbidden {
		t.Errorf("callback of another bot id = %d, %v; want 403", status, err)
	}
	wrongKey := *e.cb
	wrongKey.Token = "wrong"
	if status, _, _ := wrongKey.PostRaw(t.Context(), wecomsim.AIBotText(aiBotID, "u", "hi").JSON()); status != http.StatusForbidden {
		t.Errorf("bad signature = %d, want 403", status)
	}
	if status, _, _ := e.cb.PostRaw(t.Context(), []byte(`{"msgtype":`)); status != http.StatusBadRequest {
		t.Errorf("malformed body = %d, want 400", status)
	}
	msgs, _ := e.messages()
	if len(msgs) != 0 || e.model.calls.Load() != 0 {
		t.Errorf("refused callbacks stored %d messages, called the model %d times", len(msgs), e.model.calls.Load())
	}
}

// TestAIBotCallbackPollWindow: an answer still being written when WeCom's
// polling ends (6 min) has its stream finished at 5.5 min with what exists
// and a note; the whole answer then goes once through response_url.
func TestAIBotCallbackPollWindow(t *testing.T) {
	// The service's clock and WeCom's polling clock are apart, so that a
	// poll happens only once the simulator waits for it.
	fake := clockwork.NewFakeClockAt(time.Now())
	polls := clockwork.NewFakeClockAt(time.Now())
	e := newAIBotEnv(t, func(e *aibotEnv, _ *BotConfig) { e.clock = fake })
	e.cb.Clock, e.cb.PollInterval = polls, time.Second
	e.model.gate = make(chan struct{})
	release := sync.OnceFunc(func() { close(e.model.gate) })
	t.Cleanup(release)
	e.model.entered = make(chan string, 1)
	e.model.answer = func(string) string { return "first half;second half" } // the fake streams it in two halves
	ex := e.cb.Start(t.Context(), e.cb.WithResponseURL(wecomsim.AIBotText("", "slow", "q")))
	<-e.model.entered
	// poll lets the simulator's next refresh happen and returns its reply;
	// replies counts those recorded so far, the first message's included.
	replies := 1
	poll := func() wecomsim.AIBotReply {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			select {
			case <-ex.Done():
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := polls.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("the simulator polls no more (%v): %v", ex.Err(), ex.Replies())
		}
		polls.Advance(time.Second)
		replies++
		for {
			changed := ex.Changed()
			if rs := ex.Replies(); len(rs) >= replies {
				return rs[replies-1]
			}
			if err := ex.Err(); err != nil {
				t.Fatal(err)
			}
			<-changed
		}
	}
	// The polls see the first half.
	for {
		if r := poll(); r.Content != "" {
			if r.Content != "first half;" || r.Finish {
				t.Fatalf("growing stream = %+v", r)
			}
			break
		}
	}
	fake.Advance(5*time.Minute + 30*time.Second)
	poll()
	<-ex.Done()
	if err := ex.Err(); err != nil {
		t.Fatal(err)
	}
	if r := last(t, ex); !r.Finish || r.Content != "first half;\n\nmore follows" || ex.Expired() {
		t.Fatalf("stream at the window's end = %+v (expired %v)", r, ex.Expired())
	}
	release()
	eventually.True(t, func() bool { return len(e.sim.AIBotResponses(ex.MsgID)) == 1 }, "one response_url call")
	if got := e.sim.AIBotResponses(ex.MsgID)[0]; got.Content != "first half;second half" || got.ErrCode != 0 {
		t.Errorf("response_url got %+v, want the whole answer", got)
	}
}

// TestAIBotCallbackInterrupted: a stream that was growing when the service
// stopped ends, at the next start, with what was shown and the notice.
func TestAIBotCallbackInterrupted(t *testing.T) {
	e := newAIBotEnv(t)
	ctx := t.Context()
	m := &storage.Message{Bot: aiBotName, DedupeKey: "msg-crash", UserID: "u", MsgType: "text", Content: "q"}
	if _, err := e.store.InsertMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	id := streamID(aiBotName, "msg-crash")
	if _, _, err := e.store.CreateAIBotStream(ctx, storage.AIBotStream{Bot: aiBotName, StreamID: id, MessageID: m.ID}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.UpdateAIBotStream(ctx, aiBotName, id, "half an answer"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetMessageState(ctx, m.ID, storage.MessageStreaming, ""); err != nil {
		t.Fatal(err)
	}
	// A fresh pipeline resumes it, as after a restart.
	if _, err := e.app.pipeline.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool {
		s, err := e.store.GetAIBotStream(ctx, aiBotName, id)
		return err == nil && s.Finished
	}, "the interrupted stream finished")
	s, _ := e.store.GetAIBotStream(ctx, aiBotName, id)
	if s.Content != "half an answer\n\ninterrupted" {
		t.Errorf("interrupted stream = %q", s.Content)
	}
	if n := e.model.calls.Load(); n != 0 {
		t.Errorf("the model was asked again (%d calls)", n)
	}
}

// TestAIBotResponseURLOnce: a response_url is used once, within its hour.
func TestAIBotResponseURLOnce(t *testing.T) {
	fake := clockwork.NewFakeClockAt(time.Now())
	e := newAIBotEnv(t, func(e *aibotEnv, _ *BotConfig) { e.clock = fake })
	b := e.app.aibots[aiBotName]
	ctx := t.Context()
	deliverable := func(key string) storage.OutboxPart {
		m := &storage.Message{Bot: aiBotName, DedupeKey: key, UserID: "u", MsgType: "text", Content: "q", State: storage.MessageAnswered}
		if _, err := e.store.InsertMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		url := e.sim.IssueResponseURL(e.cb.SimURL, aiBotID, key)
		if _, _, err := e.store.CreateAIBotStream(ctx, storage.AIBotStream{Bot: aiBotName, StreamID: streamID(aiBotName, key), MessageID: m.ID, ResponseURL: url, CreatedAt: fake.Now()}); err != nil {
			t.Fatal(err)
		}
		return storage.OutboxPart{MessageID: m.ID, Bot: aiBotName, UserID: "u", Content: "the rest"}
	}
	p := deliverable("once")
	if _, err := b.Deliver(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	_, err := b.Deliver(ctx, p, time.Minute)
	if !permanentSendError(err) {
		t.Errorf("second use = %v, want a permanent refusal", err)
	}
	if n := len(e.sim.AIBotResponses("once")); n != 1 {
		t.Errorf("response_url called %d times, want 1", n)
	}

	late := deliverable("late")
	fake.Advance(time.Hour + time.Minute)
	if _, err := b.Deliver(ctx, late, 0); !permanentSendError(err) || !errors.Is(err, err) {
		t.Errorf("use after the hour = %v, want a permanent refusal", err)
	}
	if n := len(e.sim.AIBotResponses("late")); n != 0 {
		t.Errorf("an expired response_url was called %d times", n)
	}
}

// TestAIBotCallbackSeveralInstances: behind a load balancer, the polls of
// one stream land on every instance in turn, and each answers from the
// stream the database holds; a repeat on another instance gets the same
// stream, and the model is asked once.
func TestAIBotCallbackSeveralInstances(t *testing.T) {
	e := newAIBotEnv(t, func(e *aibotEnv, _ *BotConfig) { e.instances = 2 })
	msg := e.cb.WithResponseURL(wecomsim.AIBotText("", "zhangsan", "你好"))
	first := e.post(msg)
	repeat := e.post(msg)
	for _, ex := range []*wecomsim.AIBotExchange{first, repeat} {
		if r := last(t, ex); !r.Finish || r.Content != "echo: 你好" || r.StreamID != first.Replies()[0].StreamID {
			t.Errorf("reply = %+v", r)
		}
	}
	if n := e.model.calls.Load(); n != 1 {
		t.Errorf("model called %d times, want 1", n)
	}
	if a, b := e.served[0].Load(), e.served[1].Load(); a == 0 || b == 0 {
		t.Errorf("requests served: %d and %d; the test did not spread them", a, b)
	}
}
