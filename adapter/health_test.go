package adapter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/llm/llmtest"
	"github.com/wecombot/wecombot/storage"
)

// TestModelHealthEachWay: the real client, failing each way an operator
// meets, drives a bot's model health to failing with the hint that says
// what to fix; a success makes it ok, with when.
func TestModelHealthEachWay(t *testing.T) {
	t.Parallel()
	const key = "sk-health-secret"
	fake := llmtest.New(nil)
	fake.RequireKey(key)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); srv.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/v1"
	ln.Close() // nothing listens there: connection refused

	clock := clockwork.NewFakeClock()
	h := newModelHealth(Endpoint{Model: "gpt-test"}, 1, clock)
	if st := h.status(); st.State != ModelUnknown || st.Model != "gpt-test" || !st.LastOKAt.IsZero() {
		t.Fatalf("before any call: %+v, want unknown", st)
	}
	call := func(baseURL, apiKey string, reply llmtest.Reply) error {
		fake.SetRespond(func(llmtest.Request) llmtest.Reply { return reply })
		c := llm.New(llm.Config{BaseURL: baseURL, APIKey: apiKey, Model: "gpt-test", Timeout: config.Duration(100 * time.Millisecond)})
		_, err := c.Complete(context.Background(), []llm.Message{{Role: llm.RoleUser, Content: "hi"}})
		return err
	}
	ways := []struct {
		name, baseURL, key string
		reply              llmtest.Reply
		cause, hint        string
	}{
		{"unreachable", closed, key, llmtest.Reply{}, llm.CauseUnreachable, "llm.base_url"},
		{"bad key", srv.URL + "/v1", "sk-wrong", llmtest.Reply{}, llm.CauseBadKey, "llm.api_key"},
		{"unknown model", srv.URL + "/v1", key, llmtest.Reply{Status: http.StatusNotFound, Content: "model not found"}, llm.CauseUnknownModel, "llm.model"},
		{"rate limited", srv.URL + "/v1", key, llmtest.Reply{Status: http.StatusTooManyRequests, Content: "slow down"}, llm.CauseRateLimited, "rate-limiting"},
		{"timeout", srv.URL + "/v1", key, llmtest.Reply{Hang: true}, llm.CauseTimeout, "llm.timeout"},
	}
	for _, w := range ways {
		err := call(w.baseURL, w.key, w.reply)
		if err == nil {
			t.Fatalf("%s: the call succeeded", w.name)
		}
		h.record(err)
		st := h.status()
		if st.State != ModelFailing || st.Cause != w.cause || !strings.Contains(st.Hint, w.hint) || st.LastError == "" {
			t.Errorf("%s: %+v, want failing, cause %s, a hint naming %s", w.name, st, w.cause, w.hint)
		}
		if strings.Contains(st.LastError, key) || strings.Contains(st.LastError, "sk-wrong") {
			t.Errorf("%s: last error %q shows a key", w.name, st.LastError)
		}
	}
	clock.Advance(time.Minute)
	if err := call(srv.URL+"/v1", key, llmtest.Reply{Content: "fine"}); err != nil {
		t.Fatal(err)
	}
	h.record(nil)
	st := h.status()
	if st.State != ModelOK || !st.LastOKAt.Equal(clock.Now()) {
		t.Errorf("after a success: %+v, want ok at %v", st, clock.Now())
	}
	if st.Cause != llm.CauseTimeout {
		t.Errorf("after a success the last failure is %q, want it kept (timeout)", st.Cause)
	}
	// A bot's own key: the hint names where it is configured.
	own := newModelHealth(Endpoint{Model: "gpt-test", KeyName: "bots[1] (hr).llm.api_key"}, 3, clock)
	own.record(call(srv.URL+"/v1", "sk-wrong", llmtest.Reply{}))
	if st := own.status(); st.Cause != llm.CauseBadKey || st.Hint != "the model API refused the key: check bots[1] (hr).llm.api_key" {
		t.Errorf("a bot's own key refused: %+v, want the hint to name it", st)
	}
	// Errors that are not the model's say nothing of it.
	other := newModelHealth(Endpoint{Model: "gpt-test"}, 2, clock)
	other.record(context.Canceled)
	other.record(llm.ErrEmpty)
	if st := other.status(); st.State != ModelUnknown {
		t.Errorf("after errors that are not the model's: %+v, want unknown", st)
	}
}

// observe makes e's pipeline count into a new registry and log, at level,
// into a buffer; before any message is sent.
func (e *pipelineEnv) observe(level slog.Level) (*prometheus.Registry, *tokLog) {
	reg, buf := prometheus.NewRegistry(), &tokLog{}
	e.p.metrics = NewMetrics(reg)
	e.p.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level}))
	return reg, buf
}

// histogram returns the count and sum of the histogram name of bot in reg.
func histogram(t *testing.T, reg *prometheus.Registry, name, bot string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == bot {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// TestPipelineModelHealthMetricsAndLog: one failed and one answered
// message, seen in the bot's model health, the stored reason, the metrics
// and one log line each, which never holds the message's text.
func TestPipelineModelHealthMetricsAndLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail error = &llm.Error{Kind: llm.KindConfig, Status: http.StatusUnauthorized}
		var mu sync.Mutex
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 2}, Replies: testReplies, Model: "gpt-test"},
			func(context.Context, []llm.Message) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				if fail != nil {
					return "", fail
				}
				return "the answer", nil
			})
		reg, logs := e.observe(slog.LevelInfo)
		if st := e.p.ModelStatus("b"); st.State != ModelUnknown {
			t.Fatalf("before any message: %+v", st)
		}

		failed := e.done(e.text("alice", "secret question one"))
		if cause, _ := ParseFailure(failed.Error); cause != llm.CauseBadKey || strings.HasPrefix(failed.Error, "llm: llm:") {
			t.Errorf("stored reason %q: want the cause bad_key first, no doubled prefix", failed.Error)
		}
		if st := e.p.ModelStatus("b"); st.State != ModelFailing || st.Cause != llm.CauseBadKey || !strings.Contains(st.Hint, "llm.api_key") {
			t.Errorf("after a 401: %+v, want failing with the key's hint", st)
		}

		mu.Lock()
		fail = nil
		mu.Unlock()
		e.clock.Advance(time.Minute)
		e.done(e.text("alice", "secret question two"))
		if st := e.p.ModelStatus("b"); st.State != ModelOK || !st.LastOKAt.Equal(e.clock.Now()) || st.Model != "gpt-test" {
			t.Errorf("after an answer: %+v, want ok at %v", st, e.clock.Now())
		}
		// An event needs no answer: ignored, and not a call.
		e.done(e.send(Inbound{UserID: "alice", MsgType: "event", Event: "click"}))

		for result, want := range map[string]float64{"received": 3, "answered": 1, "failed": 1, "ignored": 1} {
			if got := testutil.ToFloat64(e.p.metrics.messages.WithLabelValues("b", result)); got != want {
				t.Errorf("wecombot_messages_total{bot=b,result=%s} = %v, want %v", result, got, want)
			}
		}
		for result, want := range map[string]float64{"ok": 1, "config_error": 1} {
			if got, _ := tokMetric(t, reg, "wecombot_llm_requests_total", map[string]string{"bot": "b", "result": result}); got != want {
				t.Errorf("wecombot_llm_requests_total{bot=b,result=%s} = %v, want %v", result, got, want)
			}
		}
		if n, _ := histogram(t, reg, "wecombot_llm_request_duration_seconds", "b"); n != 2 {
			t.Errorf("wecombot_llm_request_duration_seconds observed %d calls, want 2", n)
		}
		if n, _ := histogram(t, reg, "wecombot_llm_first_token_seconds", "b"); n != 0 {
			t.Errorf("wecombot_llm_first_token_seconds observed %d calls that were not streamed", n)
		}

		out := logs.String()
		if strings.Contains(out, "secret question") {
			t.Errorf("the info log holds a message's text:\n%s", out)
		}
		for _, want := range []string{
			`level=INFO msg="message failed" bot=b user=alice message=1 result=failed model_time=0s parts=1 cause=bad_key`,
			`level=INFO msg="message answered" bot=b user=alice message=2 result=answered model_time=0s parts=1`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "message ignored") {
			t.Errorf("an ignored message logged above debug:\n%s", out)
		}
	})
}

// TestPipelineDebugLogHasText: at debug level the line may carry the text.
func TestPipelineDebugLogHasText(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1}, Replies: testReplies}, nil)
		_, logs := e.observe(slog.LevelDebug)
		e.done(e.text("bob", "hello there"))
		if out := logs.String(); !strings.Contains(out, `msg="message answered"`) || !strings.Contains(out, `text="hello there"`) {
			t.Errorf("debug log:\n%s", out)
		}
	})
}

// TestPipelineStreamTimings: a streamed call's first text and whole
// duration, on the pipeline's clock; the model time and the streamed parts
// in the log line.
func TestPipelineStreamTimings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Stream: true}, Replies: testReplies})
		reg, logs := e.observe(slog.LevelInfo)
		id := e.text("u", "tell me")
		synctest.Wait()
		e.clock.Advance(2 * time.Second)
		f.pieces <- "First paragraph.\n\n"
		e.waitParts(id, 1)
		e.clock.Advance(3 * time.Second)
		f.pieces <- "Second."
		f.end <- nil
		e.done(id)
		if n, sum := histogram(t, reg, "wecombot_llm_first_token_seconds", "b"); n != 1 || sum != 2 {
			t.Errorf("first token: %d observations summing %vs, want one of 2s", n, sum)
		}
		if n, sum := histogram(t, reg, "wecombot_llm_request_duration_seconds", "b"); n != 1 || sum != 5 {
			t.Errorf("duration: %d observations summing %vs, want one of 5s", n, sum)
		}
		if want := "result=answered model_time=5s parts=2"; !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	})
}

// TestOutboxPendingMetric: the gauge is the database's count at scrape
// time, so it is right after a restart too.
func TestOutboxPendingMetric(t *testing.T) {
	t.Parallel()
	db := openTestDB(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.watchOutbox(db)
	if got, ok := tokMetric(t, reg, "wecombot_outbox_pending", nil); !ok || got != 0 {
		t.Errorf("empty outbox: %v (%v), want 0", got, ok)
	}
	if err := db.EnqueueText(t.Context(), "b", "u", []string{"one", "two", "three"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := tokMetric(t, reg, "wecombot_outbox_pending", nil); got != 3 {
		t.Errorf("three parts queued: %v, want 3", got)
	}
	parts, err := db.DueParts(t.Context(), time.Now().Add(time.Hour), 10)
	if err != nil || len(parts) == 0 {
		t.Fatal(parts, err)
	}
	if err := db.MarkSent(t.Context(), parts[0].ID, "wx"); err != nil {
		t.Fatal(err)
	}
	if got, _ := tokMetric(t, reg, "wecombot_outbox_pending", nil); got != 2 {
		t.Errorf("one part sent: %v, want 2", got)
	}
	// A database that cannot count makes the scrape say so, not report 0.
	broken := NewMetrics(prometheus.NewRegistry())
	broken.watchOutbox(failingCounter{})
	if err := testutil.CollectAndCompare(broken, strings.NewReader("")); err == nil {
		t.Error("a failed count was collected as a value")
	}
}

type failingCounter struct{}

func (failingCounter) CountPendingParts(context.Context) (int64, error) {
	return 0, errors.New("database is locked")
}

func TestParseFailure(t *testing.T) {
	t.Parallel()
	cases := []struct{ reason, cause, detail string }{
		{modelFailure(&llm.Error{Kind: llm.KindTimeout}), llm.CauseTimeout, "llm: timeout (status 0)"},
		{"model unreachable: llm: chat completion: dial tcp: lookup x: no such host", llm.CauseUnreachable, "llm: chat completion: dial tcp: lookup x: no such host"},
		{reasonInterrupted, FailureInterrupted, "the service stopped while the answer was streaming"},
		{reasonAbandoned, FailureAbandoned, reasonAbandoned},
		{"llm: llm: chat completion stream: status 500", llm.CauseFailed, "llm: chat completion stream: status 500"},
		{"model railway: left", "", "model railway: left"},
		{"errcode 81013 user left", "", "errcode 81013 user left"},
		{modelFailure(errors.New("storage: history: disk full")), "", "storage: history: disk full"},
		{kfHandledByPerson, FailureKFPerson, kfHandledByPerson},
		{kfRecalled, FailureKFRecalled, kfRecalled},
		{kfUndelivered(10), FailureKFUndelivered, "fail_type 10: the customer refuses messages"},
		{kfUndelivered(8), FailureKFUndelivered, "fail_type 8: a reason without explanation here"},
	}
	for _, c := range cases {
		cause, detail := ParseFailure(c.reason)
		if cause != c.cause || detail != c.detail {
			t.Errorf("ParseFailure(%q) = %q, %q; want %q, %q", c.reason, cause, detail, c.cause, c.detail)
		}
	}
	for _, reason := range []string{kfUndelivered(6), "fail_type 6: over the 5 messages allowed per customer message"} {
		if n, ok := KFFailType(reason); n != 6 || !ok {
			t.Errorf("KFFailType(%q) = %d, %v; want 6, true", reason, n, ok)
		}
	}
	if n, ok := KFFailType(kfHandledByPerson); ok {
		t.Errorf("KFFailType(%q) = %d, true", kfHandledByPerson, n)
	}
}

var _ PendingCounter = (*storage.DB)(nil)
