package adapter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// chunks cuts s into pieces of 1..n runes, as a model streams it.
func chunks(r *rand.Rand, s string, n int) []string {
	var out []string
	for s != "" {
		k, i := 1+r.IntN(n), 0
		for ; k > 0 && i < len(s); k-- {
			_, size := utf8.DecodeRuneInString(s[i:])
			i += size
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// longAnswer is about 6,000 characters in paragraphs of varied length, some
// longer than a part.
func longAnswer() string {
	var b strings.Builder
	for i := 0; b.Len() < 18000; i++ {
		switch i % 4 {
		case 0:
			b.WriteString(strings.Repeat("这是一个比较长的段落，用来测试流式分段。", 3+i%5))
		case 1:
			b.WriteString(strings.Repeat("A western sentence, then another one. ", 4+i%7))
		case 2:
			b.WriteString(strings.Repeat("很长的一段没有换行的文字。", 200)) // > 2048 bytes
		case 3:
			b.WriteString("- item\n- item two")
		}
		b.WriteString("\n\n")
	}
	b.WriteString("最后一句没有段落结束。")
	return b.String()
}

func TestStreamSplitterJoinsBackExactly(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	texts := []string{longAnswer(), "one line", "para one\n\npara two", "\n\n\n", strings.Repeat("字", 3000)}
	for _, text := range texts {
		for round := range 20 {
			sp := newStreamSplitter(maxPartBytes)
			now := time.Unix(0, 0)
			var parts []string
			for _, c := range chunks(r, text, 1+round*3) {
				now = now.Add(time.Duration(r.IntN(800)) * time.Millisecond)
				parts = append(parts, sp.add(c, now)...)
			}
			parts = append(parts, sp.finish()...)
			if got := strings.Join(parts, ""); got != text {
				t.Fatalf("parts join to %d bytes, want the %d of the answer", len(got), len(text))
			}
			if sp.answer() != text {
				t.Fatal("answer() is not the text streamed")
			}
			for _, p := range parts {
				if len(p) > maxPartBytes || !utf8.ValidString(p) || p == "" {
					t.Fatalf("bad part of %d bytes (valid UTF-8: %v)", len(p), utf8.ValidString(p))
				}
			}
		}
	}
}

func TestStreamSplitterFirstParagraphAtOnce(t *testing.T) {
	sp := newStreamSplitter(maxPartBytes)
	t0 := time.Unix(0, 0)
	if got := sp.add("第一段还没", t0); got != nil {
		t.Fatalf("an incomplete paragraph went out: %q", got)
	}
	if got := sp.add("写完。\n", t0); got != nil {
		t.Fatalf("a paragraph went out before its blank line: %q", got)
	}
	if got := sp.add("\n第二", t0); len(got) != 1 || got[0] != "第一段还没写完。\n\n" {
		t.Fatalf("the first complete paragraph: %q", got)
	}
	// Later paragraphs wait to fill a part…
	if got := sp.add("段。\n\n第三段。\n\n", t0.Add(time.Second)); got != nil {
		t.Fatalf("a short paragraph went out before the interval: %q", got)
	}
	// …or for the interval.
	if got := sp.add("第四", t0.Add(streamInterval)); len(got) != 1 || got[0] != "第二段。\n\n第三段。\n\n" {
		t.Fatalf("after the interval: %q", got)
	}
	// A part's worth of text goes out whatever the time.
	long := strings.Repeat("长", 1000) // 3,000 bytes
	got := sp.add(long, t0.Add(streamInterval+time.Second))
	if len(got) != 1 || len(got[0]) > maxPartBytes || !strings.HasPrefix(got[0], "第四") {
		t.Fatalf("a full part: %d parts", len(got))
	}
	if rest := sp.finish(); strings.Join(append(append([]string{"第一段还没写完。\n\n", "第二段。\n\n第三段。\n\n"}, got...), rest...), "") != sp.answer() {
		t.Fatal("the parts do not join back")
	}
}

// streamFake is a streaming LLM driven by the test: each call takes its
// pieces, in the order sent, from pieces, and ends at the first end event.
type streamFake struct {
	pieces chan string // "" never comes from a model: see end
	end    chan error  // feeds the same queue as pieces, keeping the order
	queue  chan streamEvent
	calls  atomic.Int64
}

type streamEvent struct {
	piece string
	end   bool
	err   error
}

// newStreamFake returns a streamFake whose feeding goroutine ends with t.
func newStreamFake(t testing.TB) *streamFake {
	f := &streamFake{pieces: make(chan string), end: make(chan error), queue: make(chan streamEvent, 100)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			var ev streamEvent
			select {
			case <-done:
				return
			case p := <-f.pieces:
				ev = streamEvent{piece: p}
			case err := <-f.end:
				ev = streamEvent{end: true, err: err}
			}
			select {
			case f.queue <- ev:
			case <-done:
				return
			}
		}
	}()
	return f
}

func (f *streamFake) Complete(context.Context, []llm.Message) (string, error) {
	return "", errors.New("streamFake: Complete called while streaming is on")
}

func (f *streamFake) Stream(ctx context.Context, _ []llm.Message, onDelta func(string) error) (string, error) {
	f.calls.Add(1)
	var answer strings.Builder
	for {
		select {
		case ev := <-f.queue:
			if ev.end {
				if ev.err != nil {
					return "", ev.err
				}
				return answer.String(), nil
			}
			answer.WriteString(ev.piece)
			if err := onDelta(ev.piece); err != nil {
				return "", err
			}
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func newStreamEnv(t *testing.T, cfg PipelineConfig) (*pipelineEnv, *streamFake) {
	t.Helper()
	e := newPipelineEnv(t, cfg, nil)
	f := newStreamFake(t)
	e.streamer = f
	e.start()
	return e, f
}

// waitParts returns the parts of message id once the pipeline is idle,
// failing unless there are at least n.
func (e *pipelineEnv) waitParts(id int64, n int) []string {
	e.t.Helper()
	synctest.Wait()
	ps := e.parts(id)
	if len(ps) < n {
		e.t.Fatalf("message %d has %d parts with the pipeline idle, want %d", id, len(ps), n)
	}
	return ps
}

func TestPipelineStreamsParagraphsAsTheyComplete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 2, HistoryTurns: 10, Stream: true}, Replies: testReplies})
		id := e.text("u", "tell me")
		f.pieces <- "First para"
		f.pieces <- "graph.\n\nSecond"
		if got := e.waitParts(id, 1); got[0] != "First paragraph.\n\n" {
			t.Fatalf("first part %q", got[0])
		}
		if m := e.message(id); m.State != storage.MessageStreaming {
			t.Fatalf("state %q while streaming", m.State)
		}
		// The first part is sent while the model still writes: the message is
		// not finished by it.
		if m := e.deliver(id); m.State != storage.MessageStreaming {
			t.Fatalf("state %q after the first part was sent mid-stream", m.State)
		}
		f.pieces <- " paragraph, the end."
		f.end <- nil
		m := e.done(id)
		answer := "First paragraph.\n\nSecond paragraph, the end."
		if got := e.parts(id); strings.Join(got, "") != answer || len(got) != 2 {
			t.Fatalf("parts %q", got)
		}
		if m.State != storage.MessageAnswering {
			t.Fatalf("state %q with the last part unsent", m.State)
		}
		if m := e.deliver(id); m.State != storage.MessageAnswered {
			t.Fatalf("state %q after every part was sent", m.State)
		}
		if got, want := e.history("u"), []string{"user: tell me", "assistant: " + answer}; !slices.Equal(got, want) {
			t.Fatalf("history %q", got)
		}
	})
}

func TestPipelineStreamAllSentBeforeTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Stream: true}, Replies: testReplies})
		id := e.text("u", "q")
		f.pieces <- "Only paragraph.\n\n"
		e.waitParts(id, 1)
		e.deliver(id)
		f.end <- nil
		synctest.Wait()
		if m := e.message(id); m.State != storage.MessageAnswered {
			t.Fatalf("state %q: a message whose parts were all sent did not end answered", m.State)
		}
	})
}

func TestPipelineStreamFailures(t *testing.T) {
	t.Run("before any part: retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Retries: 1, Stream: true}, Replies: testReplies})
			id := e.text("u", "q")
			f.pieces <- "half a para"
			f.end <- errors.New("connection reset")
			e.clock.BlockUntilContext(t.Context(), 2) // the lease renewal and the pause before the retry
			e.clock.Advance(time.Second)
			f.pieces <- "Whole answer."
			f.end <- nil
			e.done(id)
			if got := e.parts(id); !slices.Equal(got, []string{"Whole answer."}) || f.calls.Load() != 2 {
				t.Fatalf("parts %q after %d calls", got, f.calls.Load())
			}
		})
	})
	t.Run("after a part: notice, no retry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Retries: 3, HistoryTurns: 10, Stream: true}, Replies: testReplies})
			id := e.text("u", "q")
			f.pieces <- "Para one.\n\n"
			e.waitParts(id, 1)
			f.end <- errors.New("connection reset")
			m := e.done(id)
			if got := e.parts(id); !slices.Equal(got, []string{"Para one.\n\n", "unavailable"}) {
				t.Fatalf("parts %q", got)
			}
			if !strings.Contains(m.Error, "connection reset") || f.calls.Load() != 1 {
				t.Fatalf("error %q after %d calls", m.Error, f.calls.Load())
			}
			if m := e.deliver(id); m.State != storage.MessageFailed {
				t.Fatalf("state %q", m.State)
			}
			if h := e.history("u"); len(h) != 0 {
				t.Fatalf("a broken answer went into the history: %q", h)
			}
		})
	})
	// On an exclusive database the parts are stored from the received
	// state (the message is not marked answering first): the same.
	for _, exclusive := range []bool{false, true} {
		t.Run(fmt.Sprintf("delivery failed mid-stream: abandoned, exclusive %v", exclusive), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, f := newStreamEnv(t, PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, Stream: true}, Exclusive: exclusive, Replies: testReplies})
				id := e.text("u", "q")
				f.pieces <- "Para one.\n\n"
				e.waitParts(id, 1)
				ps, err := e.db.PartsOf(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.db.FailPart(t.Context(), ps[0].ID, "errcode 81013: user not found"); err != nil {
					t.Fatal(err)
				}
				f.pieces <- strings.Repeat("x", 3000) // a full part: the append is refused
				// The stream must end on the refusal: nothing ends it otherwise.
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				if err := e.p.Shutdown(ctx); err != nil {
					t.Fatalf("the stream went on after its message failed: %v", err)
				}
				m := e.message(id)
				if got := e.parts(id); len(got) != 1 || m.State != storage.MessageFailed {
					t.Fatalf("parts %q, state %q", got, m.State)
				}
			})
		})
	}
}

func TestPipelineStreamInterruptedResumesWithNotice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := PipelineConfig{LLM: LLMConfig{MaxConcurrency: 1, HistoryTurns: 10, Stream: true}, Replies: testReplies}
		cfg.Replies.Interrupted = "interrupted, ask again"
		e, f := newStreamEnv(t, cfg)
		id := e.text("u", "q")
		f.pieces <- "Para one.\n\n"
		e.waitParts(id, 1)
		// The service stops mid-answer and does not wait for the model.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if err := e.p.Shutdown(ctx); err == nil {
			t.Fatal("Shutdown returned nil with a stream in flight past its deadline")
		}
		if m := e.message(id); m.State != storage.MessageStreaming {
			t.Fatalf("state %q after the stop", m.State)
		}
		e.start()
		if err := e.p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.done(id)
		if got := e.parts(id); !slices.Equal(got, []string{"Para one.\n\n", "interrupted, ask again"}) {
			t.Fatalf("parts %q", got)
		}
		if f.calls.Load() != 1 {
			t.Fatalf("the model was asked again (%d calls): the user would get the answer twice", f.calls.Load())
		}
		if m := e.deliver(id); m.State != storage.MessageFailed {
			t.Fatalf("state %q", m.State)
		}
	})
}
