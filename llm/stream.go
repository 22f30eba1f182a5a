package llm

import (
	"context"
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
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", c.fail("chat completion stream", streamErr(idle, err), nil)
		}
		watchdog.Reset(c.timeout)
		if len(resp.Choices) == 0 || resp.Choices[0].Delta.Content == "" {
			continue
		}
		delta := resp.Choices[0].Delta.Content
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
