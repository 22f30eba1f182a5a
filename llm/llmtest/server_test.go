package llmtest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

const apiKey = "sk-test-0123456789"

func newClient(t *testing.T, respond func(Request) Reply) (*Server, *openai.Client) {
	t.Helper()
	fake := New(respond)
	ts := httptest.NewServer(fake.Handler())
	t.Cleanup(func() {
		fake.Close()
		ts.Close()
	})
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL + "/compatible-mode/v1"
	return fake, openai.NewClientWithConfig(cfg)
}

// chat builds a request: system is left out when empty, turns alternate
// user and assistant starting with user.
func chat(system string, turns ...string) openai.ChatCompletionRequest {
	req := openai.ChatCompletionRequest{Model: "qwen-plus"}
	if system != "" {
		req.Messages = append(req.Messages, openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: system})
	}
	for i, m := range turns {
		role := openai.ChatMessageRoleUser
		if i%2 == 1 {
			role = openai.ChatMessageRoleAssistant
		}
		req.Messages = append(req.Messages, openai.ChatCompletionMessage{Role: role, Content: m})
	}
	return req
}

func TestEchoCompletion(t *testing.T) {
	fake, client := newClient(t, nil)
	resp, err := client.CreateChatCompletion(context.Background(), chat("be brief", "你好，世界"))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content; got != "echo: 你好，世界" {
		t.Errorf("content = %q", got)
	}
	if resp.Choices[0].FinishReason != openai.FinishReasonStop || resp.Usage.TotalTokens == 0 {
		t.Errorf("response %+v", resp)
	}
	want := Request{Model: "qwen-plus", Messages: []Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "你好，世界"}}}
	got := fake.Requests()
	if len(got) != 1 || got[0].Model != want.Model || got[0].Stream || !reflect.DeepEqual(got[0].Messages, want.Messages) {
		t.Errorf("Requests() = %+v", got)
	}
	if fake.Calls() != 1 {
		t.Errorf("Calls() = %d", fake.Calls())
	}
}

func TestRequireKey(t *testing.T) {
	fake, client := newClient(t, nil)
	fake.RequireKey("sk-other-key-987654")
	_, err := client.CreateChatCompletion(context.Background(), chat("", "hi"))
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
		t.Fatalf("wrong key: %v", err)
	}
	if strings.Contains(apiErr.Message, apiKey) {
		t.Error("the error repeats the whole key")
	}
	fake.RequireKey(apiKey)
	if _, err := client.CreateChatCompletion(context.Background(), chat("", "hi")); err != nil {
		t.Fatalf("right key: %v", err)
	}
	if fake.Calls() != 2 || len(fake.Requests()) != 1 {
		t.Errorf("Calls %d, Requests %d", fake.Calls(), len(fake.Requests()))
	}
}

func TestHangAndDelay(t *testing.T) {
	fake, client := newClient(t, func(Request) Reply { return Reply{Hang: true} })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.CreateChatCompletion(ctx, chat("", "hi"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("the client waited far past its deadline")
	}

	fake.SetRespond(func(r Request) Reply { return Reply{Content: "late", Delay: 30 * time.Millisecond} })
	start = time.Now()
	resp, err := client.CreateChatCompletion(context.Background(), chat("", "hi"))
	if err != nil || resp.Choices[0].Message.Content != "late" || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("delayed reply: %v %+v after %v", err, resp, time.Since(start))
	}

	// A stream that stalls mid-answer is cut off by the client's deadline.
	fake.SetRespond(func(r Request) Reply { return Reply{Content: "abcdefghijkl", ChunkDelay: time.Hour} })
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := chat("", "hi")
	req.Stream = true
	stream, err := client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for err == nil {
		_, err = stream.Recv()
	}
	if errors.Is(err, io.EOF) {
		t.Fatal("the stalled stream finished")
	}
}

// TestHangEndsWithClient checks that a hanging handler returns once its
// client gives up, so the test server can close without Server.Close.
func TestHangEndsWithClient(t *testing.T) {
	fake := New(func(Request) Reply { return Reply{Hang: true} })
	ts := httptest.NewServer(fake.Handler())
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL + "/v1"
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(ctx, chat("", "hi")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		fake.Close() // let the test end anyway
		<-closed
		t.Fatal("the hanging handler outlived its client")
	}
}

// TestCloseReleasesHang checks that a client without a deadline does not
// keep the test server from closing.
func TestCloseReleasesHang(t *testing.T) {
	called := make(chan struct{})
	fake := New(func(Request) Reply { close(called); return Reply{Hang: true} })
	ts := httptest.NewServer(fake.Handler())
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL + "/v1"
	client := openai.NewClientWithConfig(cfg)
	errc := make(chan error, 1)
	go func() {
		_, err := client.CreateChatCompletion(context.Background(), chat("", "hi"))
		errc <- err
	}()
	<-called // the request hangs, or is about to
	fake.Close()
	ts.Close()
	if err := <-errc; err == nil {
		t.Fatal("a hanging request succeeded after Close")
	}
}

func TestRefusals(t *testing.T) {
	_, client := newClient(t, nil)
	_, err := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{Model: "m"})
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusBadRequest {
		t.Errorf("no messages: %v", err)
	}

	// BaseURL without /v1, the misconfiguration the NOTES warn about.
	fake := New(nil)
	ts := httptest.NewServer(fake.Handler())
	defer ts.Close()
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL
	_, err = openai.NewClientWithConfig(cfg).CreateChatCompletion(context.Background(), chat("", "hi"))
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusNotFound {
		t.Errorf("BaseURL without /v1: %v", err)
	}

	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad JSON: HTTP %d", resp.StatusCode)
	}
}

func TestConcurrentRequests(t *testing.T) {
	fake, client := newClient(t, nil)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := chat("", "hi")
			req.Stream = i%2 == 0
			if req.Stream {
				s, err := client.CreateChatCompletionStream(context.Background(), req)
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Close()
				for err == nil {
					_, err = s.Recv()
				}
				if !errors.Is(err, io.EOF) {
					t.Error(err)
				}
				return
			}
			if _, err := client.CreateChatCompletion(context.Background(), req); err != nil {
				t.Error(err)
			}
		}()
		wg.Add(1)
		go func() { defer wg.Done(); fake.SetRespond(nil); _ = fake.Requests() }()
	}
	wg.Wait()
	if fake.Calls() != 20 || len(fake.Requests()) != 20 {
		t.Errorf("Calls %d, Requests %d", fake.Calls(), len(fake.Requests()))
	}
}

// TestReplyHeader: a rate-limited reply carries Retry-After and OpenAI's
// 429 body; headers reach successful answers, plain and streamed, too.
func TestReplyHeader(t *testing.T) {
	fake := New(func(r Request) Reply {
		if r.Messages[len(r.Messages)-1].Content == "limit" {
			return Reply{Status: http.StatusTooManyRequests, Content: "Rate limit reached", Header: http.Header{"Retry-After": {"1"}}}
		}
		return Reply{Content: "ok", Header: http.Header{"x-request-id": {"req-1"}}}
	})
	ts := httptest.NewServer(fake.Handler())
	defer ts.Close()
	post := func(body string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	resp, body := post(`{"model":"m","messages":[{"role":"user","content":"limit"}]}`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("HTTP %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"code":"rate_limit_exceeded"`) || !strings.Contains(body, `"type":"requests"`) {
		t.Errorf("429 %s: %s", resp.Header.Get("Content-Type"), body)
	}
	for _, stream := range []string{"false", "true"} {
		resp, body = post(`{"model":"m","stream":` + stream + `,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != "req-1" || !strings.Contains(body, `"ok"`) {
			t.Errorf("stream %s: HTTP %d, X-Request-Id %q: %s", stream, resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
		}
	}

	// go-openai sees the 429 as the rate limit it is.
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL + "/v1"
	_, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(context.Background(), chat("", "limit"))
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" {
		t.Errorf("go-openai: %v", err)
	}
}

func TestSpread(t *testing.T) {
	const content = "re: message 12 from load-u00012" // 31 runes: 11 chunks
	plain := Spread(Request{}, content, time.Second, 5*time.Second)
	if plain.Content != content || plain.Delay != 5*time.Second || plain.ChunkDelay != 0 {
		t.Errorf("plain: %+v", plain)
	}
	streamed := Spread(Request{Stream: true}, content, time.Second, 5*time.Second)
	n := time.Duration(len(split(content, chunkRunes)))
	if end := streamed.Delay + n*streamed.ChunkDelay; streamed.Delay != time.Second || end > 5*time.Second || end < 5*time.Second-n {
		t.Errorf("streamed: first after %v, every %v, done after %v; want 1s and 5s", streamed.Delay, streamed.ChunkDelay, end)
	}
	if short := Spread(Request{Stream: true}, content, time.Second, 0); short.Delay != 0 || short.ChunkDelay != 0 {
		t.Errorf("first later than total: %+v", short)
	}
}

// TestInFlight counts a request while it is answered and not after.
func TestInFlight(t *testing.T) {
	called := make(chan struct{})
	fake := New(func(Request) Reply { close(called); return Reply{Hang: true} })
	ts := httptest.NewServer(fake.Handler())
	cfg := openai.DefaultConfig(apiKey)
	cfg.BaseURL = ts.URL + "/v1"
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(ctx, chat("", "hi"))
		errc <- err
	}()
	<-called
	if n := fake.InFlight(); n != 1 {
		t.Errorf("InFlight() = %d while answering, want 1", n)
	}
	cancel()
	<-errc
	ts.Close() // waits for the handler to return
	if n := fake.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after the request, want 0", n)
	}
}
