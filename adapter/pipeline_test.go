package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// completerFake is an LLM whose answers the test writes.
type completerFake struct {
	complete func(ctx context.Context, msgs []llm.Message) (string, error)
	calls    atomic.Int64
}

var _ Completer = (*completerFake)(nil)

func (f *completerFake) Complete(ctx context.Context, msgs []llm.Message) (string, error) {
	f.calls.Add(1)
	return f.complete(ctx, msgs)
}

// notifyCounter stands for the outbox: it counts the wake-ups.
type notifyCounter struct{ n atomic.Int64 }

func (c *notifyCounter) Notify() { c.n.Add(1) }

// testReplies are distinct from the defaults so a test sees which was said.
var testReplies = Replies{
	Unavailable: "unavailable", Help: "help text", TextOnly: "text only",
	Welcome: "welcome!", Reset: "reset done", Empty: "say something",
}

// pipelineEnv is a pipeline on real storage with a fake LLM and clock.
type pipelineEnv struct {
	t      *testing.T
	cfg    PipelineConfig
	db     *storage.DB
	clock  *clockwork.FakeClock
	llm    *completerFake
	outbox *notifyCounter
	p      *Pipeline
	keys   atomic.Int64
	// streamer, when set, is the LLM instead of llm (a StreamCompleter).
	streamer Completer
}

func newPipelineEnv(t *testing.T, cfg PipelineConfig, complete func(context.Context, []llm.Message) (string, error)) *pipelineEnv {
	t.Helper()
	db := openTestDB(t)
	if complete == nil {
		complete = echoAnswer
	}
	e := &pipelineEnv{t: t, cfg: cfg, db: db, clock: clockwork.NewFakeClock(), llm: &completerFake{complete: complete}}
	e.start()
	return e
}

// start builds a new pipeline on the same storage (a process start), without
// Start: tests call it when they need the resume.
func (e *pipelineEnv) start() {
	e.outbox = &notifyCounter{}
	var completer Completer = e.llm
	if e.streamer != nil {
		completer = e.streamer
	}
	e.p = NewPipeline(e.cfg, e.db, completer, e.outbox, e.clock, slog.New(slog.DiscardHandler))
	p := e.p
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
}

// openTestDB opens a SQLite database in a new temporary folder, closed
// when t ends.
func openTestDB(t testing.TB) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.Context(), storage.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "test.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func echoAnswer(_ context.Context, msgs []llm.Message) (string, error) {
	return "answer to " + msgs[len(msgs)-1].Content, nil
}

// send accepts a message of user and returns its id.
func (e *pipelineEnv) send(in Inbound) int64 {
	e.t.Helper()
	if in.Bot == "" {
		in.Bot = "b"
	}
	if in.MsgType == "" {
		in.MsgType = "text"
	}
	in.DedupeKey = fmt.Sprint("k", e.keys.Add(1))
	isNew, err := e.p.Accept(e.t.Context(), in)
	if err != nil || !isNew {
		e.t.Fatalf("Accept(%+v) = %v, %v", in, isNew, err)
	}
	// Message ids count from 1 in a fresh database, one per key.
	id := e.keys.Load()
	if m := e.message(id); m.DedupeKey != in.DedupeKey {
		e.t.Fatalf("message %d has key %q, want %q", id, m.DedupeKey, in.DedupeKey)
	}
	return id
}

func (e *pipelineEnv) text(user, content string) int64 {
	return e.send(Inbound{UserID: user, Content: content})
}

func (e *pipelineEnv) message(id int64) storage.Message {
	e.t.Helper()
	m, err := e.db.GetMessage(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// done waits until the pipeline has finished with message id: its answer
// is stored (parts waiting in the outbox) or it needed none.
func (e *pipelineEnv) done(id int64) storage.Message {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := e.message(id)
		if m.State == storage.MessageAnswered || m.State == storage.MessageFailed ||
			(m.State == storage.MessageAnswering && len(e.parts(id)) > 0) {
			return m
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("message %d still %s after 5s", id, m.State)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// notified waits until the outbox was notified want times (it is told after
// the answer is stored) and returns how often it was.
func (e *pipelineEnv) notified(want int64) int64 {
	deadline := time.Now().Add(5 * time.Second)
	for e.outbox.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	return e.outbox.n.Load()
}

func (e *pipelineEnv) parts(id int64) []string {
	e.t.Helper()
	ps, err := e.db.PartsOf(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Content)
	}
	return out
}

// deliver marks every part of message id sent, as the outbox would.
func (e *pipelineEnv) deliver(id int64) storage.Message {
	e.t.Helper()
	ps, err := e.db.PartsOf(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range ps {
		if err := e.db.MarkSent(context.Background(), p.ID, "wx"); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.message(id)
}

func (e *pipelineEnv) history(user string) []string {
	e.t.Helper()
	turns, err := e.db.History(context.Background(), "b", user, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, t := range turns {
		out = append(out, t.Role+": "+t.Content)
	}
	return out
}

// llmGate is an LLM that holds every call until the test releases it, oldest
// first, and records how many calls run at once, per user (the user is the
// part of the question before "-") and in all.
type llmGate struct {
	started chan string // the question of each call, as it starts

	mu       sync.Mutex
	waiting  []chan struct{} // the calls held, in the order they started
	inflight map[string]int
	total    int
	maxUser  int
	maxTotal int
	asked    map[string][]string
}

func newLLMGate() *llmGate {
	return &llmGate{started: make(chan string, 100), inflight: map[string]int{}, asked: map[string][]string{}}
}

func (g *llmGate) complete(ctx context.Context, msgs []llm.Message) (string, error) {
	q := msgs[len(msgs)-1].Content
	user, _, _ := strings.Cut(q, "-")
	release := make(chan struct{})
	g.mu.Lock()
	g.waiting = append(g.waiting, release)
	g.inflight[user]++
	g.total++
	g.maxUser = max(g.maxUser, g.inflight[user])
	g.maxTotal = max(g.maxTotal, g.total)
	g.asked[user] = append(g.asked[user], q)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight[user]--
		g.total--
		g.mu.Unlock()
	}()
	g.started <- q
	select {
	case <-release:
		return "answer to " + q, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// release lets the oldest call held answer.
func (g *llmGate) release(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiting) == 0 {
		t.Fatal("no LLM call to release")
	}
	close(g.waiting[0])
	g.waiting = g.waiting[1:]
}

// next waits for the next call to start and returns its question.
func (g *llmGate) next(t *testing.T) string {
	t.Helper()
	select {
	case q := <-g.started:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("no LLM call started within 5s")
		return ""
	}
}

// quiet asserts that no further call starts for a moment: the calls in
// flight are all the pipeline allows.
func (g *llmGate) quiet(t *testing.T) {
	t.Helper()
	select {
	case q := <-g.started:
		t.Fatalf("call %q started beyond what may run at once", q)
	case <-time.After(30 * time.Millisecond):
	}
}

func (g *llmGate) stats() (maxUser, maxTotal int, asked map[string][]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxUser, g.maxTotal, g.asked
}

func TestPipelineOneUserInOrder(t *testing.T) {
	gate := newLLMGate()
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, HistoryTurns: 10, Replies: testReplies}, gate.complete)
	var ids []int64
	for i := 1; i <= 5; i++ {
		ids = append(ids, e.text("a", fmt.Sprintf("a-%d", i)))
	}
	for i := 1; i <= 5; i++ {
		if q := gate.next(t); q != fmt.Sprintf("a-%d", i) {
			t.Fatalf("call %d asks %q, want a-%d", i, q, i)
		}
		gate.quiet(t) // the next message of a waits for this one
		gate.release(t)
	}
	for i, id := range ids {
		if got, want := e.parts(e.done(id).ID), []string{fmt.Sprintf("answer to a-%d", i+1)}; !equalStrings(got, want) {
			t.Errorf("message %d parts %q, want %q", i+1, got, want)
		}
	}
	if maxUser, _, _ := gate.stats(); maxUser != 1 {
		t.Errorf("%d messages of one user ran at once", maxUser)
	}
	// Each turn saw the ones before it: the history is in arrival order.
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprintf("user: a-%d", i), fmt.Sprintf("assistant: answer to a-%d", i))
	}
	if got := e.history("a"); !equalStrings(got, want) {
		t.Errorf("history %q, want %q", got, want)
	}
	if n := e.notified(5); n != 5 {
		t.Errorf("outbox notified %d times, want 5", n)
	}
}

func TestPipelineUsersConcurrentUpToMaxConcurrency(t *testing.T) {
	const workers, users, each = 3, 6, 2
	gate := newLLMGate()
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: workers, Replies: testReplies}, gate.complete)
	var ids []int64
	for i := range each {
		for u := range users {
			ids = append(ids, e.text(fmt.Sprint("u", u), fmt.Sprintf("u%d-%d", u, i)))
		}
	}
	first := map[string]bool{}
	for range workers {
		user, _, _ := strings.Cut(gate.next(t), "-")
		first[user] = true
	}
	if len(first) != workers {
		t.Fatalf("the first %d calls are of %d users, want %d different users", workers, len(first), workers)
	}
	gate.quiet(t) // no more than workers at once
	for range users*each - workers {
		gate.release(t)
		gate.next(t)
	}
	for range workers {
		gate.release(t)
	}
	for _, id := range ids {
		e.done(id)
	}
	maxUser, maxTotal, asked := gate.stats()
	if maxTotal != workers || maxUser != 1 {
		t.Errorf("at most %d calls ran at once (%d of one user), want %d (1)", maxTotal, maxUser, workers)
	}
	for u := range users {
		user := fmt.Sprint("u", u)
		if want := []string{user + "-0", user + "-1"}; !equalStrings(asked[user], want) {
			t.Errorf("%s asked %q, want %q", user, asked[user], want)
		}
	}
}

func TestPipelineEvents(t *testing.T) {
	tests := []struct {
		event, welcome string
		parts          []string
	}{
		{"subscribe", "welcome!", []string{"welcome!"}},
		{"enter_agent", "欢迎使用", []string{"欢迎使用"}},
		{"subscribe", "", nil},
		{"enter_agent", "", nil},
		{"unsubscribe", "welcome!", nil},
		{"click", "welcome!", nil},
		{"LOCATION", "welcome!", nil},
	}
	for _, tt := range tests {
		t.Run(tt.event+"/"+tt.welcome, func(t *testing.T) {
			replies := testReplies
			replies.Welcome = tt.welcome
			e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 2, Replies: replies}, func(context.Context, []llm.Message) (string, error) {
				t.Error("an event reached the LLM")
				return "", errors.New("no")
			})
			if err := e.p.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			id := e.send(Inbound{UserID: "u", MsgType: "event", Event: tt.event})
			m := e.done(id)
			if got := e.parts(id); !equalStrings(got, tt.parts) {
				t.Errorf("parts %q, want %q", got, tt.parts)
			}
			wantState, wantNotify := storage.MessageAnswering, int64(1) // until the outbox delivers
			if tt.parts == nil {
				wantState, wantNotify = storage.MessageAnswered, 0
			}
			if m.State != wantState || m.Error != "" {
				t.Errorf("state %q (error %q), want %q", m.State, m.Error, wantState)
			}
			if n := e.notified(wantNotify); n != wantNotify {
				t.Errorf("outbox notified %d times, want %d", n, wantNotify)
			}
		})
	}
}

func TestPipelineCommandsAndNonText(t *testing.T) {
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 2, HistoryTurns: 10, Replies: testReplies}, nil)
	tests := []struct {
		msgType, content string
		parts            []string
		reset            bool
	}{
		{"text", "", []string{"say something"}, false},
		{"text", "  \n\t ", []string{"say something"}, false},
		{"text", "/reset", []string{"reset done"}, true},
		{"text", "/RESET", []string{"reset done"}, true},
		{"text", "  /Reset\n", []string{"reset done"}, true},
		{"text", "/NEW", []string{"reset done"}, true},
		{"text", "/Help", []string{"help text"}, false},
		{"image", "", []string{"text only"}, false},
		{"voice", "", []string{"text only"}, false},
		{"location", "", []string{"text only"}, false},
	}
	for _, tt := range tests {
		// A conversation to keep or clear.
		e.done(e.text("u", "hello"))
		calls := e.llm.calls.Load()
		id := e.send(Inbound{UserID: "u", MsgType: tt.msgType, Content: tt.content})
		e.done(id)
		if got := e.parts(id); !equalStrings(got, tt.parts) {
			t.Errorf("%s %q: parts %q, want %q", tt.msgType, tt.content, got, tt.parts)
		}
		if n := e.llm.calls.Load() - calls; n != 0 {
			t.Errorf("%s %q reached the LLM", tt.msgType, tt.content)
		}
		if h := e.history("u"); (len(h) == 0) != tt.reset {
			t.Errorf("%s %q: history %q, reset %v", tt.msgType, tt.content, h, tt.reset)
		}
		if m := e.deliver(id); m.State != storage.MessageAnswered {
			t.Errorf("%s %q: delivered, state %q, want answered", tt.msgType, tt.content, m.State)
		}
		if err := e.db.ResetConversation(t.Context(), "b", "u"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPipelineLLMRetries(t *testing.T) {
	tests := []struct {
		retries  int
		failures int // calls that fail before one succeeds
		calls    int
		answered bool
	}{
		{retries: 0, failures: 99, calls: 1},
		{retries: 2, failures: 99, calls: 3},
		{retries: 2, failures: 2, calls: 3, answered: true},
		{retries: 3, failures: 1, calls: 2, answered: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d retries, %d failures", tt.retries, tt.failures), func(t *testing.T) {
			var calls atomic.Int64
			called := make(chan struct{}, 10)
			e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 1, LLMRetries: tt.retries, Replies: testReplies},
				func(_ context.Context, msgs []llm.Message) (string, error) {
					defer func() { called <- struct{}{} }()
					if int(calls.Add(1)) <= tt.failures {
						return "", errors.New("model overloaded")
					}
					return "fine", nil
				})
			id := e.text("u", "hi")
			pause := time.Second
			for i := 1; i < tt.calls; i++ {
				select {
				case <-called:
				case <-time.After(5 * time.Second):
					t.Fatalf("call %d not made within 5s", i)
				}
				// The pipeline waits on the clock before the next attempt
				// (the other waiter is the renewal of the user lease).
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				if err := e.clock.BlockUntilContext(ctx, 2); err != nil {
					t.Fatalf("no pause after call %d: %v", i, err)
				}
				cancel()
				if int(calls.Load()) != i {
					t.Fatalf("call %d made before the pause ended", i+1)
				}
				e.clock.Advance(pause)
				pause *= 2
			}
			m := e.done(id)
			if n := int(calls.Load()); n != tt.calls {
				t.Errorf("LLM called %d times, want %d", n, tt.calls)
			}
			if tt.answered {
				if got := e.parts(id); !equalStrings(got, []string{"fine"}) || m.Error != "" {
					t.Errorf("parts %q, error %q; want the answer", got, m.Error)
				}
				return
			}
			if got := e.parts(id); !equalStrings(got, []string{"unavailable"}) {
				t.Errorf("parts %q, want the unavailable text", got)
			}
			if h := e.history("u"); len(h) != 0 {
				t.Errorf("a failed turn entered the history: %q", h)
			}
			m = e.deliver(id)
			if m.State != storage.MessageFailed || !strings.Contains(m.Error, "model overloaded") {
				t.Errorf("after delivery: state %q error %q, want failed with the LLM's reason", m.State, m.Error)
			}
		})
	}
}

func TestPipelineStartResumes(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, HistoryTurns: 10, Replies: testReplies},
		func(ctx context.Context, msgs []llm.Message) (string, error) {
			mu.Lock()
			asked = append(asked, msgs[len(msgs)-1].Content)
			mu.Unlock()
			return echoAnswer(ctx, msgs)
		})
	// What a previous run left: accepted, some never started, one started
	// when the process died, and one already answered.
	insert := func(user, content, state string) int64 {
		m := &storage.Message{Bot: "b", DedupeKey: "prev-" + content, UserID: user, MsgType: "text", Content: content, State: state}
		if ok, err := e.db.InsertMessage(t.Context(), m); !ok || err != nil {
			t.Fatalf("InsertMessage = %v, %v", ok, err)
		}
		return m.ID
	}
	x1 := insert("x", "x-1", storage.MessageAnswering)
	done := insert("x", "x-0", storage.MessageAnswered)
	x2 := insert("x", "x-2", storage.MessageReceived)
	y1 := insert("y", "y-1", storage.MessageReceived)
	x3 := insert("x", "x-3", storage.MessageReceived)
	e.keys.Store(5)

	if err := e.p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{x1, x2, y1, x3} {
		e.done(id)
	}
	if m := e.message(done); m.State != storage.MessageAnswered || len(e.parts(done)) != 0 {
		t.Errorf("an answered message was answered again: %+v", m)
	}
	mu.Lock()
	var xs []string
	for _, q := range asked {
		if strings.HasPrefix(q, "x") {
			xs = append(xs, q)
		}
	}
	mu.Unlock()
	if want := []string{"x-1", "x-2", "x-3"}; !equalStrings(xs, want) {
		t.Errorf("x's messages asked in order %q, want %q", xs, want)
	}
	if got, want := e.history("x"), []string{"user: x-1", "assistant: answer to x-1", "user: x-2", "assistant: answer to x-2", "user: x-3", "assistant: answer to x-3"}; !equalStrings(got, want) {
		t.Errorf("history of x %q, want %q", got, want)
	}
	// New messages go on after the resumed ones.
	if id := e.text("y", "y-2"); !equalStrings(e.parts(e.done(id).ID), []string{"answer to y-2"}) {
		t.Errorf("a new message after the resume: parts %q", e.parts(id))
	}
}

func TestPipelineShutdown(t *testing.T) {
	gate := newLLMGate()
	cfg := PipelineConfig{MaxConcurrency: 1, HistoryTurns: 10, Replies: testReplies}
	e := newPipelineEnv(t, cfg, gate.complete)
	a1 := e.text("a", "a-1")
	a2 := e.text("a", "a-2")
	b1 := e.text("b", "b-1")
	if q := gate.next(t); q != "a-1" {
		t.Fatalf("first call %q, want a-1", q)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- e.p.Shutdown(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v with a message in flight", err)
	case <-time.After(30 * time.Millisecond):
	}
	gate.release(t)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the message in flight finished")
	}
	gate.quiet(t)
	if got := e.parts(a1); !equalStrings(got, []string{"answer to a-1"}) {
		t.Errorf("the message in flight was not finished: parts %q", got)
	}
	late := e.text("c", "c-1") // accepted while stopping: stored for the next start
	for _, id := range []int64{a2, b1, late} {
		if m := e.message(id); m.State != storage.MessageReceived || len(e.parts(id)) != 0 {
			t.Errorf("queued message %d: state %q, %d parts; want received and untouched", id, m.State, len(e.parts(id)))
		}
	}

	// The next start answers what was left, in order.
	e.llm.complete = echoAnswer
	e.start()
	if err := e.p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{a2, b1, late} {
		e.done(id)
	}
	if got, want := e.history("a"), []string{"user: a-1", "assistant: answer to a-1", "user: a-2", "assistant: answer to a-2"}; !equalStrings(got, want) {
		t.Errorf("history of a %q, want %q", got, want)
	}
}

func TestPipelineShutdownTimeout(t *testing.T) {
	gate := newLLMGate()
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 2, Replies: testReplies}, gate.complete)
	id := e.text("a", "a-1")
	gate.next(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no time left: the call in flight is cancelled
	if err := e.p.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if m := e.message(id); m.State == storage.MessageAnswered || m.State == storage.MessageFailed || len(e.parts(id)) != 0 {
		t.Fatalf("a cancelled message was settled: %+v, parts %q", m, e.parts(id))
	}
	// It is resumed, not lost, and the user never got the unavailable text.
	e.llm.complete = echoAnswer
	e.start()
	if err := e.p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.parts(e.done(id).ID); !equalStrings(got, []string{"answer to a-1"}) {
		t.Errorf("resumed parts %q", got)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPipelineRateLimitedRetriedUntilAnswered: calls refused for the
// provider's rate limit are tried again after Retry-After, beyond
// llm.retries, and the user gets the answer, not the unavailable text.
func TestPipelineRateLimitedRetriedUntilAnswered(t *testing.T) {
	called := make(chan struct{}, 10)
	var calls atomic.Int64
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, Exclusive: true, LLMRetries: 0, Replies: testReplies},
		func(context.Context, []llm.Message) (string, error) {
			defer func() { called <- struct{}{} }()
			if calls.Add(1) <= 3 {
				return "", &llm.Error{Kind: llm.KindRateLimited, Status: 429, RetryAfter: 2 * time.Second}
			}
			return "fine", nil
		})
	id := e.text("u", "hi")
	for i := 1; i <= 3; i++ {
		<-called
		// The next call waits for the limiter's pause to end.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("no pause after refusal %d: %v", i, err)
		}
		cancel()
		if int(calls.Load()) != i {
			t.Fatalf("call %d made during the pause", i+1)
		}
		e.clock.Advance(2 * time.Second)
	}
	m := e.done(id)
	if got := e.parts(id); !equalStrings(got, []string{"fine"}) || m.Error != "" {
		t.Errorf("parts %q, error %q; want the answer after the rate limit", got, m.Error)
	}
}

// TestPipelineRateLimitedGivesUpWhenOld: a message older than
// RateLimitWait is not kept waiting for the provider any longer.
func TestPipelineRateLimitedGivesUpWhenOld(t *testing.T) {
	var e *pipelineEnv
	e = newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, Exclusive: true, RateLimitWait: time.Minute, Replies: testReplies},
		func(context.Context, []llm.Message) (string, error) {
			e.clock.Advance(2 * time.Minute) // the provider kept it waiting
			return "", &llm.Error{Kind: llm.KindRateLimited, Status: 429}
		})
	id := e.text("u", "hi")
	e.done(id)
	if got := e.parts(id); !equalStrings(got, []string{"unavailable"}) {
		t.Errorf("parts %q, want the unavailable text", got)
	}
	if n := e.llm.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// TestPipelineConfigErrorNotRetried: a bad key or model fails at once,
// whatever llm.retries says.
func TestPipelineConfigErrorNotRetried(t *testing.T) {
	e := newPipelineEnv(t, PipelineConfig{MaxConcurrency: 4, Exclusive: true, LLMRetries: 3, Replies: testReplies},
		func(context.Context, []llm.Message) (string, error) {
			return "", &llm.Error{Kind: llm.KindConfig, Status: 401}
		})
	id := e.text("u", "hi")
	m := e.done(id)
	if n := e.llm.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1 (no retry of a configuration error)", n)
	}
	if got := e.parts(id); !equalStrings(got, []string{"unavailable"}) || !strings.Contains(m.Error, "config_error") {
		t.Errorf("parts %q error %q; want the unavailable text and the reason", got, m.Error)
	}
}
