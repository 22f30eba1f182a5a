package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// maxStream bounds a whole streamed answer; between chunks the configured
// timeout applies, so a slow but steady model is not cut off.
const maxStream = 10 * time.Minute

// Stream asks for the answer to msgs as a stream and calls onDelta with each
// piece of text as it arrives, in order; it returns the whole answer. The
// configured timeout bounds the wait for the first piece and between pieces.
// onDelta runs on the caller's goroutine; when it returns an error the stream
// is abandoned and that error returned.
func (c *Client) Stream(ctx context.Context, msgs []Message, onDelta func(string) error) (string, error) {
	req, err := c.request(msgs)
	if err != nil {
		return "", err
	}
	req.Stream = true
	ctx, cancel := context.WithTimeout(ctx, maxStream)
	defer cancel()
	// Idle watchdog: cancelled when no piece arrived for the timeout.
	idle, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	stalled := fmt.Errorf("%w: no text for %s", errIdle, c.timeout)
	watchdog := time.AfterFunc(c.timeout, func() { stop(stalled) })
	defer watchdog.Stop()

	reqCtx, retryAfter := withRetryAfter(idle)
	stream, err := c.api.CreateChatCompletionStream(reqCtx, req)
	if err != nil {
		return "", c.fail("chat completion stream", streamErr(idle, err), retryAfter)
	}
	defer stream.Close()
	var answer strings.Builder
	for {
		raw, err := stream.RecvRaw()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", c.fail("chat completion stream", streamErr(idle, err), nil)
		}
		var chunk streamChunk
		if err := json.Unmarshal(raw, &chunk); err != nil {
			return "", c.fail("chat completion stream", err, nil)
		}
		watchdog.Reset(c.timeout)
		if len(chunk.Choices) == 0 || chunk.Choices[0].Delta.Content == "" {
			continue
		}
		delta := chunk.Choices[0].Delta.Content
		answer.WriteString(delta)
		if err := onDelta(delta); err != nil {
			return "", err
		}
	}
	if strings.TrimSpace(answer.String()) == "" {
		return "", noText("chat completion stream")
	}
	return answer.String(), nil
}

// streamChunk is what Stream reads of a chunk: its text. go-openai's Recv
// decodes each chunk into the whole ChatCompletionStreamResponse, which was
// 9–13% of the service's CPU under a flood of answers. With RecvRaw and this
// struct, a 200-chunk answer read from a local fake model took 3.4–3.6 ms
// and 606 kB instead of 4.1–4.7 ms and 692 kB, the fake model's own work
// included (BenchmarkStream). Target: ack p99 < 50 ms under a flood, with
// the answers on the same cores (BENCHMARKS.md).
type streamChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
}

// errIdle is the cause of a stream cut off for sending no text within the
// timeout.
var errIdle = errors.New("timed out")

// streamErr prefers the idle watchdog's reason over the bare "context
// canceled" the transport reports.
func streamErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// Stream answers like Complete: in one piece, or, with a Pace, in
// echoPieces pieces Pace apart.
func (e Echo) Stream(ctx context.Context, msgs []Message, onDelta func(string) error) (string, error) {
	answer, err := e.Complete(ctx, msgs)
	if err != nil {
		return "", err
	}
	if e.Pace <= 0 {
		if err := onDelta(answer); err != nil {
			return "", err
		}
		return answer, nil
	}
	runes := []rune(answer)
	size := (len(runes) + echoPieces - 1) / echoPieces
	for i := 0; i < len(runes); i += size {
		if i > 0 {
			t := time.NewTimer(e.Pace)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return "", ctx.Err()
			}
		}
		if err := onDelta(string(runes[i:min(i+size, len(runes))])); err != nil {
			return "", err
		}
	}
	return answer, nil
}
