package llmtest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"
)

func TestStream(t *testing.T) {
	const answer = "流式回答：第一段。Second part, with ASCII too. 结束🙂"
	fake, client := newClient(t, func(Request) Reply {
		return Reply{Content: answer, ChunkDelay: time.Millisecond}
	})
	req := chat("", "question")
	req.Stream = true
	stream, err := client.CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var b strings.Builder
	chunks, finished := 0, false
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c := resp.Choices[0]
		if !utf8.ValidString(c.Delta.Content) {
			t.Errorf("chunk %q is not valid UTF-8", c.Delta.Content)
		}
		if c.Delta.Content != "" {
			chunks++
		}
		if c.FinishReason == openai.FinishReasonStop {
			finished = true
		}
		b.WriteString(c.Delta.Content)
	}
	if b.String() != answer {
		t.Errorf("streamed %q, want %q", b.String(), answer)
	}
	if chunks < 5 || !finished {
		t.Errorf("%d content chunks, finished %v", chunks, finished)
	}
	if r := fake.Requests(); len(r) != 1 || !r[0].Stream {
		t.Errorf("Requests() = %+v", r)
	}
}

func TestErrorStatuses(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			_, client := newClient(t, func(Request) Reply { return Reply{Status: status, Content: "upstream says no"} })
			_, err := client.CreateChatCompletion(context.Background(), chat("", "hi"))
			var apiErr *openai.APIError
			if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != status || apiErr.Message != "upstream says no" || apiErr.Type == "" {
				t.Fatalf("plain: %v (%#v)", err, apiErr)
			}
			req := chat("", "hi")
			req.Stream = true
			_, err = client.CreateChatCompletionStream(context.Background(), req)
			if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != status {
				t.Fatalf("stream: %v", err)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	for _, s := range []string{"", "a", "abc", "abcd", "你好世界🙂x"} {
		parts := split(s, 3)
		if strings.Join(parts, "") != s {
			t.Errorf("split(%q) loses text: %q", s, parts)
		}
		for _, p := range parts {
			if !utf8.ValidString(p) || utf8.RuneCountInString(p) > 3 {
				t.Errorf("split(%q): bad part %q", s, p)
			}
		}
	}
}
