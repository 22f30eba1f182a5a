package llmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// chunkRunes is how many runes each streamed chunk carries: small enough
// that any multi-byte answer spans several chunks.
const chunkRunes = 3

// writeCompletion answers a non-streamed request in the chat.completion shape.
func writeCompletion(w http.ResponseWriter, req Request, content string) {
	prompt := 0
	for _, m := range req.Messages {
		prompt += approxTokens(m.Content)
	}
	completion := approxTokens(content)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id":      newID(),
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   req.Model,
		"choices": []map[string]any{{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content},
			"finish_reason": "stop",
		}},
		"usage": map[string]any{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
	})
}

// stream answers as OpenAI does: a role chunk, content chunks, a chunk with
// finish_reason, then [DONE], each as one SSE event.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, req Request, reply Reply) {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	id, created := newID(), time.Now().Unix()

	event := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}},
		})
		_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
		if flusher != nil {
			flusher.Flush()
		}
	}

	event(map[string]any{"role": "assistant", "content": ""}, nil)
	for _, part := range split(reply.Content, chunkRunes) {
		if !s.wait(ctx, reply.ChunkDelay) {
			return
		}
		event(map[string]any{"content": part}, nil)
	}
	event(map[string]any{}, "stop")
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
	if flusher != nil {
		flusher.Flush()
	}
}

// split cuts s into pieces of n runes, so every piece is valid UTF-8.
func split(s string, n int) []string {
	var parts []string
	for len(s) > 0 {
		i, count := 0, 0
		for i < len(s) && count < n {
			_, size := utf8.DecodeRuneInString(s[i:])
			i += size
			count++
		}
		parts = append(parts, s[:i])
		s = s[i:]
	}
	return parts
}

func writeError(w http.ResponseWriter, status int, msg, typ, param, code string) {
	body := map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}
	if param != "" {
		body["param"] = param
	}
	if code != "" {
		body["code"] = code
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

// errorType is the "type" OpenAI reports with each status.
func errorType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "requests"
	case status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

// errorCode is the "code" OpenAI reports with a status, where it has one
// that does not depend on the request.
func errorCode(status int) string {
	if status == http.StatusTooManyRequests {
		return "rate_limit_exceeded"
	}
	return ""
}

// approxTokens is a rough count (about four bytes a token) so usage is
// plausible; nothing should depend on its exact value.
func approxTokens(s string) int {
	return (len(s) + 3) / 4
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "chatcmpl-" + hex.EncodeToString(b)
}

// redact shows only the ends of a wrong key, as OpenAI's error does.
func redact(key string) string {
	if len(key) <= 8 {
		return "****"
	}
	return key[:3] + "****" + key[len(key)-4:]
}
