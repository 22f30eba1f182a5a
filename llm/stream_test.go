package llm

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/llm/llmtest"
)

func TestStreamDeliversPiecesInOrder(t *testing.T) {
	answer := strings.Repeat("第一段。", 20) + "\n\n" + strings.Repeat("second paragraph ", 10)
	c, fake := newClient(t, func(llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: answer, ChunkDelay: time.Millisecond}
	}, 5*time.Second)
	var pieces []string
	got, err := c.Stream(context.Background(), []Message{{Role: RoleUser, Content: "hi"}}, func(d string) error {
		pieces = append(pieces, d)
		return nil
	})
	if err != nil || got != answer {
		t.Fatalf("Stream = %q, %v", got, err)
	}
	if len(pieces) < 10 || strings.Join(pieces, "") != answer {
		t.Fatalf("%d pieces joining to %q", len(pieces), strings.Join(pieces, ""))
	}
	if !fake.Requests()[0].Stream {
		t.Fatal("the request did not ask for a stream")
	}
}

func TestStreamErrors(t *testing.T) {
	stop := errors.New("stop here")
	cases := []struct {
		name    string
		reply   llmtest.Reply
		onDelta func(string) error
		want    string
	}{
		{"server error", llmtest.Reply{Status: http.StatusInternalServerError}, nil, "status 500"},
		{"silent model", llmtest.Reply{Hang: true}, nil, "no text for"},
		{"stalls mid-answer", llmtest.Reply{Content: "abc", ChunkDelay: 2 * time.Second}, nil, "no text for"},
		{"empty answer", llmtest.Reply{Content: "  "}, nil, "no text"},
		{"caller stops", llmtest.Reply{Content: "abcdef"}, func(string) error { return stop }, "stop here"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newClient(t, func(llmtest.Request) llmtest.Reply { return tc.reply }, 300*time.Millisecond)
			onDelta := tc.onDelta
			if onDelta == nil {
				onDelta = func(string) error { return nil }
			}
			_, err := c.Stream(context.Background(), []Message{{Role: RoleUser, Content: "hi"}}, onDelta)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "sk-secret-key") {
				t.Fatalf("the key leaked: %v", err)
			}
		})
	}
}

// A stream longer than the timeout is fine as long as it keeps coming.
func TestStreamOutlastsTheTimeout(t *testing.T) {
	answer := strings.Repeat("abc", 100)
	c, _ := newClient(t, func(llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: answer, ChunkDelay: 10 * time.Millisecond} // 100 chunks, ~1 s
	}, 200*time.Millisecond)
	got, err := c.Stream(context.Background(), []Message{{Role: RoleUser, Content: "hi"}}, func(string) error { return nil })
	if err != nil || got != answer {
		t.Fatalf("Stream = %d bytes, %v", len(got), err)
	}
}

// BenchmarkStream reads a streamed answer of 200 chunks (600 characters, the
// fake model's 3 a chunk) from a local fake model: the client's CPU per
// answer, most of it reading the chunks.
func BenchmarkStream(b *testing.B) {
	answer := strings.Repeat("一二三", 200)
	c, _ := newClient(b, func(llmtest.Request) llmtest.Reply { return llmtest.Reply{Content: answer} }, 5*time.Second)
	msgs := []Message{{Role: RoleUser, Content: "hi"}}
	for b.Loop() {
		got, err := c.Stream(b.Context(), msgs, func(string) error { return nil })
		if err != nil || got != answer {
			b.Fatalf("Stream = %d bytes, %v", len(got), err)
		}
	}
}
