package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
	"github.com/wecombot/wecombot/storage"
)

// streamedAnswer is about n characters in paragraphs of about 300.
func streamedAnswer(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n*3; i++ {
		b.WriteString(strings.Repeat("这一段是流式回答的一部分，用来测量首段的送达。", 13))
		b.WriteString("\n\n")
	}
	return b.String()
}

// streamCase makes the fake LLM stream answer over about total, and returns
// when the first paragraph will have been written: the time the request
// arrives (read from the channel) plus the chunks up to its blank line.
func streamCase(e *env, answer string, total time.Duration) <-chan time.Time {
	chunks := (len([]rune(answer)) + 2) / 3 // the fake streams 3 runes a chunk
	delay := total / time.Duration(chunks)
	para := len([]rune(answer[:strings.Index(answer, "\n\n")+2]))
	paraDone := time.Duration((para+2)/3) * delay
	at := make(chan time.Time, 1)
	e.llm.SetRespond(func(llmtest.Request) llmtest.Reply {
		at <- time.Now().Add(paraDone)
		return llmtest.Reply{Content: answer, ChunkDelay: delay}
	})
	return at
}

// The first paragraph of a streamed answer reaches the user while the model
// is still writing, and the parts join back to the exact answer.
func TestStreamedAnswerEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	answer := streamedAnswer(6000)
	streamCase(e, answer, 3*time.Second)
	e.post(e.text("wangwu", "write a lot"))
	first := e.waitDelivered(1)[0]
	if first.ToUser != "wangwu" || !strings.HasSuffix(first.Content, "\n\n") || !strings.HasPrefix(answer, first.Content) {
		t.Fatalf("first part %q", first.Content)
	}
	db, err := storage.Open(context.Background(), storage.Config{Driver: "sqlite", DSN: e.dbPath})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if m, err := db.GetMessage(context.Background(), 1); err != nil || m.State != storage.MessageStreaming {
		t.Fatalf("when the first part arrived the message was %q (%v), want streaming: the model had finished", m.State, err)
	}
	var got strings.Builder
	e.waitFor(15*time.Second, func(sent []wecomsim.Sent) bool {
		got.Reset()
		for _, s := range sent {
			got.WriteString(s.Content)
		}
		return got.Len() >= len(answer)
	})
	if got.String() != answer {
		t.Fatalf("the parts join to %d bytes, want the answer's %d exactly", got.Len(), len(answer))
	}
	sent := e.sim.Delivered()
	for _, s := range sent {
		if len(s.Content) > 2048 {
			t.Fatalf("a part of %d bytes", len(s.Content))
		}
	}
	t.Logf("%d-byte answer in %d parts", len(answer), len(sent))
}

// BenchmarkStreamFirstPart streams a 6,000-character answer over 30 s and
// reports how long after the first paragraph was complete the user had the
// first part. Run with -benchtime=1x (each iteration takes the 30 s of the
// stream).
func BenchmarkStreamFirstPart(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, nil)
		answer := streamedAnswer(6000)
		paraAt := streamCase(e, answer, 30*time.Second)
		b.StartTimer()
		e.post(e.text("bench", "write a lot"))
		first := e.waitDelivered(1)[0]
		lag := first.At.Sub(<-paraAt)
		b.ReportMetric(float64(lag.Microseconds())/1000, "ms-after-paragraph")
		e.waitFor(time.Minute, func(sent []wecomsim.Sent) bool { return sentText(sent) == answer })
		b.ReportMetric(float64(len(e.sim.Delivered())), "parts")
	}
}

// sentText is the text of the parts sent, in order.
func sentText(sent []wecomsim.Sent) string {
	var b strings.Builder
	for _, s := range sent {
		b.WriteString(s.Content)
	}
	return b.String()
}
