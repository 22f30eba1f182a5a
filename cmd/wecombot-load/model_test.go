package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/llm/llmtest"
)

// TestLoadModel checks the fake model of a run: "re: <message>", and with
// -llm-rate, OpenAI's 429 with Retry-After beyond the rate.
func TestLoadModel(t *testing.T) {
	// A rate so low that only the bucket's one call passes during the test.
	m := newLoadModel(loadOptions{LLMRate: 0.001, LLMRetryAfter: 1500 * time.Millisecond, LLMLatency: 10 * time.Millisecond})
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	defer m.Close()
	post := func(stream bool) (*http.Response, string) {
		t.Helper()
		body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"message 1"}]}`, stream)
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post(false)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"content":"re: message 1"`) {
		t.Errorf("first call: HTTP %d: %s", resp.StatusCode, body)
	}
	if m.streamed.Load() {
		t.Error("a call without stream taken for a streamed one")
	}
	for _, stream := range []bool{true, false} {
		resp, body = post(stream)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
			t.Errorf("beyond the rate (stream %v): HTTP %d, Retry-After %q", stream, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if !strings.Contains(body, `"code":"rate_limit_exceeded"`) {
			t.Errorf("429 body: %s", body)
		}
	}
	if m.Calls() != 3 || m.limited.Load() != 2 {
		t.Errorf("%d calls, %d limited; want 3 and 2", m.Calls(), m.limited.Load())
	}
	if !m.streamed.Load() {
		t.Error("a call with stream (refused or not) not noted: the report would say the service does not stream")
	}

	plain := newLoadModel(loadOptions{})
	reply := plain.respond(llmtest.Request{Messages: []llmtest.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "re: a"}, {Role: "user", Content: "b"}}})
	if reply.Content != "re: b" || reply.Status != 0 || reply.Delay != 0 {
		t.Errorf("unlimited, no latency: %+v", reply)
	}
}
