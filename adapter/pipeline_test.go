package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// pipelineEnv is a pipeline on real storage with a fake LLM and clock. The
// tests that use it run in a synctest bubble (synctest.Test), where
// synctest.Wait decides when the pipeline has done all it can: no test
// polls or sleeps. The pipeline's own time is the fake clockwork clock,
// which the tests advance.
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

// done returns message id once the pipeline has finished with it: its
// answer is stored (parts waiting in the outbox) or it needed none. The
// pipeline tests run in a synctest bubble: synctest.Wait lets the pipeline
// do all it can first, so a message it has not finished is one it cannot
// finish without the test (a clock to advance, a call to release).
func (e *pipelineEnv) done(id int64) storage.Message {
	e.t.Helper()
	synctest.Wait()
	m := e.message(id)
	if m.State != storage.MessageAnswered && m.State != storage.MessageFailed &&
		(m.State != storage.MessageAnswering || len(e.parts(id)) == 0) {
		e.t.Fatalf("message %d still %s with the pipeline idle", id, m.State)
	}
	return m
}

// notified returns how often the outbox was notified (it is told after
// the answer is stored) once the pipeline is idle.
func (e *pipelineEnv) notified() int64 {
	synctest.Wait()
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
	// answer, when set, is the answer to q asked with msgs; otherwise
	// "answer to q".
	answer func(q string, msgs []llm.Message) string

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
		if g.answer != nil {
			return g.answer(q, msgs), nil
		}
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

// quiet asserts that no further call starts: the calls in flight are all
// the pipeline allows. synctest.Wait lets every goroutine that could start
// one run until it blocks.
func (g *llmGate) quiet(t *testing.T) {
	t.Helper()
	synctest.Wait()
	select {
	case q := <-g.started:
		t.Fatalf("call %q started beyond what may run at once", q)
	default:
	}
}

func (g *llmGate) stats() (maxUser, maxTotal int, asked map[string][]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxUser, g.maxTotal, g.asked
}

func TestPipelineStartResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var asked []string
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 4, HistoryTurns: 10}, Replies: testReplies},
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
		if want := []string{"x-1", "x-2", "x-3"}; !slices.Equal(xs, want) {
			t.Errorf("x's messages asked in order %q, want %q", xs, want)
		}
		if got, want := e.history("x"), []string{"user: x-1", "assistant: answer to x-1", "user: x-2", "assistant: answer to x-2", "user: x-3", "assistant: answer to x-3"}; !slices.Equal(got, want) {
			t.Errorf("history of x %q, want %q", got, want)
		}
		// New messages go on after the resumed ones.
		if id := e.text("y", "y-2"); !slices.Equal(e.parts(e.done(id).ID), []string{"answer to y-2"}) {
			t.Errorf("a new message after the resume: parts %q", e.parts(id))
		}
	})
}

func TestPipelineShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		cfg := PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, HistoryTurns: 10}, Replies: testReplies}
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
		synctest.Wait()
		select {
		case err := <-stopped:
			t.Fatalf("Shutdown returned %v with a message in flight", err)
		default:
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
		if got := e.parts(a1); !slices.Equal(got, []string{"answer to a-1"}) {
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
		if got, want := e.history("a"), []string{"user: a-1", "assistant: answer to a-1", "user: a-2", "assistant: answer to a-2"}; !slices.Equal(got, want) {
			t.Errorf("history of a %q, want %q", got, want)
		}
	})
}

func TestPipelineShutdownTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := newLLMGate()
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 2}, Replies: testReplies}, gate.complete)
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
		if got := e.parts(e.done(id).ID); !slices.Equal(got, []string{"answer to a-1"}) {
			t.Errorf("resumed parts %q", got)
		}
	})
}
