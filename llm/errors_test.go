package llm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/config"
)

// TestCallErrorKinds: what each status of the API means to the caller, for
// a plain and a streamed call, with the Retry-After of rate limits.
func TestCallErrorKinds(t *testing.T) {
	cases := []struct {
		status     int
		retryAfter string
		kind       Kind
		wait       time.Duration
		hint       string
		cause      string
	}{
		{http.StatusTooManyRequests, "3", KindRateLimited, 3 * time.Second, "rate-limiting", CauseRateLimited},
		{http.StatusTooManyRequests, "", KindRateLimited, 0, "rate-limiting", CauseRateLimited},
		{http.StatusTooManyRequests, "3600", KindRateLimited, maxRetryAfter, "rate-limiting", CauseRateLimited},
		{http.StatusServiceUnavailable, "2", KindRateLimited, 2 * time.Second, "rate-limiting", CauseRateLimited},
		{http.StatusUnauthorized, "", KindConfig, 0, "llm.api_key", CauseBadKey},
		{http.StatusForbidden, "", KindConfig, 0, "llm.api_key", CauseBadKey},
		{http.StatusNotFound, "", KindConfig, 0, "llm.model", CauseUnknownModel},
		{http.StatusInternalServerError, "5", KindFailed, 0, "", CauseFailed},
		{http.StatusBadGateway, "", KindFailed, 0, "", CauseFailed},
	}
	for _, c := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.retryAfter != "" {
				w.Header().Set("Retry-After", c.retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.status)
			_, _ = w.Write([]byte(`{"error":{"message":"upstream says no","type":"x"}}`))
		}))
		client := New(Config{BaseURL: srv.URL + "/v1", APIKey: "sk-secret-key", Model: "m", Timeout: config.Duration(5 * time.Second)})
		msgs := []Message{{Role: RoleUser, Content: "hi"}}
		_, errComplete := client.Complete(context.Background(), msgs)
		_, errStream := client.Stream(context.Background(), msgs, func(string) error { return nil })
		srv.Close()
		for name, err := range map[string]error{"Complete": errComplete, "Stream": errStream} {
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("%d %s: err %v is not an *Error", c.status, name, err)
				continue
			}
			if e.Kind != c.kind || e.Status != c.status || e.RetryAfter != c.wait {
				t.Errorf("%d %s: kind %v status %d retry after %v; want %v %d %v", c.status, name, e.Kind, e.Status, e.RetryAfter, c.kind, c.status, c.wait)
			}
			if KindOf(err) != c.kind {
				t.Errorf("%d %s: KindOf = %v", c.status, name, KindOf(err))
			}
			if got := CauseOf(err); got != c.cause {
				t.Errorf("%d %s: cause %q, want %q", c.status, name, got, c.cause)
			}
			if h := Hint(err); (c.hint == "") != (h == "") || !strings.Contains(h, c.hint) {
				t.Errorf("%d %s: hint %q, want one mentioning %q", c.status, name, h, c.hint)
			}
			// A bot's own key is named where it is; the other hints stay.
			own := strings.Replace(Hint(err), "llm.api_key", "bots[1] (hr).llm.api_key", 1)
			if h := HintFor(err, "bots[1] (hr).llm.api_key"); h != own || HintFor(err, "") != Hint(err) {
				t.Errorf("%d %s: HintFor = %q, want %q", c.status, name, h, own)
			}
			if !strings.Contains(err.Error(), "upstream says no") || strings.Contains(err.Error(), "sk-secret-key") {
				t.Errorf("%d %s: error %q: want the API's message and never the key", c.status, name, err)
			}
		}
	}
}

func TestCallErrorTimeout(t *testing.T) {
	// The body read first: net/http notices the client gave up only then.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer srv.Close()
	client := New(Config{BaseURL: srv.URL + "/v1", APIKey: "k", Model: "m", Timeout: config.Duration(50 * time.Millisecond)})
	msgs := []Message{{Role: RoleUser, Content: "hi"}}
	_, errComplete := client.Complete(context.Background(), msgs)
	_, errStream := client.Stream(context.Background(), msgs, func(string) error { return nil })
	for name, err := range map[string]error{"Complete": errComplete, "Stream": errStream} {
		if KindOf(err) != KindTimeout || CauseOf(err) != CauseTimeout || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("%s: err %v kind %v cause %q, want a timeout", name, err, KindOf(err), CauseOf(err))
		}
		if strings.Contains(err.Error(), srv.URL) {
			t.Errorf("%s: err %q names the request URL", name, err)
		}
	}
}

// TestCallErrorUnreachable: a model API that cannot be reached is told
// apart from one that answers badly, and the error keeps what failed but
// not the request URL, which may carry credentials.
func TestCallErrorUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	client := New(Config{BaseURL: "http://" + addr + "/sk-secret-in-path/v1", APIKey: "sk-secret-key", Model: "m", Timeout: config.Duration(5 * time.Second)})
	msgs := []Message{{Role: RoleUser, Content: "hi"}}
	_, errComplete := client.Complete(context.Background(), msgs)
	_, errStream := client.Stream(context.Background(), msgs, func(string) error { return nil })
	// A name that does not resolve, as the transport reports it.
	dns := callError("chat completion", &url.Error{Op: "Post", URL: "https://api.example.invalid/sk-secret-in-path/v1/chat/completions",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.example.invalid", IsNotFound: true}}}, nil)
	for name, err := range map[string]error{"Complete": errComplete, "Stream": errStream, "DNS": dns} {
		if CauseOf(err) != CauseUnreachable || !strings.Contains(Hint(err), "llm.base_url") {
			t.Errorf("%s: err %v: cause %q hint %q, want unreachable", name, err, CauseOf(err), Hint(err))
		}
		if KindOf(err) != KindFailed {
			t.Errorf("%s: kind %v, want a failure worth a retry", name, KindOf(err))
		}
		if s := err.Error(); strings.Contains(s, "sk-secret") || !strings.HasPrefix(s, "llm: chat completion") {
			t.Errorf("%s: error %q: want what failed, never the URL or the key", name, s)
		}
	}
	if s := dns.Error(); !strings.Contains(s, "api.example.invalid") || !strings.Contains(s, "no such host") {
		t.Errorf("DNS error %q lost the host or the reason", s)
	}
}

// TestCallErrorMasksEchoedKey: a provider or proxy that echoes the key in
// its error does not put it in ours.
func TestCallErrorMasksEchoedKey(t *testing.T) {
	const key = "sk-echoed-secret-key"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"Incorrect API key provided: ` + key + `.","type":"invalid_request_error"}}`))
	}))
	defer srv.Close()
	client := New(Config{BaseURL: srv.URL + "/v1", APIKey: key, Model: "m", Timeout: config.Duration(5 * time.Second)})
	msgs := []Message{{Role: RoleUser, Content: "hi"}}
	_, errComplete := client.Complete(context.Background(), msgs)
	_, errStream := client.Stream(context.Background(), msgs, func(string) error { return nil })
	for name, err := range map[string]error{"Complete": errComplete, "Stream": errStream} {
		if s := err.Error(); strings.Contains(s, key) || !strings.Contains(s, "Incorrect API key provided: ******.") {
			t.Errorf("%s: error %q, want the message with the key masked", name, s)
		}
		if CauseOf(err) != CauseBadKey {
			t.Errorf("%s: cause %q after masking, want bad_key", name, CauseOf(err))
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"86400":                         maxRetryAfter,
		"Wed, 02 Dec 2026 10:00:04 GMT": 4 * time.Second,
		"Wed, 02 Dec 2026 09:59:00 GMT": 0,
	}
	for v, want := range cases {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestKindOfOtherErrors(t *testing.T) {
	for _, err := range []error{nil, errors.New("boom"), ErrEmpty} {
		if KindOf(err) != KindFailed || Hint(err) != "" || CauseOf(err) != "" {
			t.Errorf("%v: kind %v hint %q", err, KindOf(err), Hint(err))
		}
	}
	// Made by hand (test fakes): still a readable error.
	if got := (&Error{Kind: KindRateLimited, Status: 429}).Error(); !strings.Contains(got, "rate_limited") {
		t.Errorf("hand-made error reads %q", got)
	}
}
