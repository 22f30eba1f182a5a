package llm

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// probeServer is the fake model behind a recorder of the raw request
// bodies, which llmtest.Request leaves the token limits out of.
// key, when set, is the only one it takes.
func probeServer(t *testing.T, key string, respond func(llmtest.Request) llmtest.Reply) (url string, bodies func() []map[string]any) {
	t.Helper()
	fake := llmtest.New(respond)
	fake.RequireKey(key)
	var mu sync.Mutex
	var seen []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		fake.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() { fake.Close(); srv.Close() })
	return srv.URL, func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]any(nil), seen...)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name, model string
		reply       llmtest.Reply
		key         string
		cause       string // "" for success
		limit       string // the token limit the request carries
	}{
		{name: "ok", model: "gpt-4o-mini", key: "sk-probe-key", limit: "max_tokens"},
		// The answer's text does not matter: a one-token answer may be empty.
		{name: "empty answer", model: "m", reply: llmtest.Reply{Content: " "}, key: "sk-probe-key", limit: "max_tokens"},
		{name: "reasoning model", model: "o3-mini", key: "sk-probe-key", limit: "max_completion_tokens"},
		{name: "bad key", model: "m", key: "sk-wrong", cause: CauseBadKey, limit: "max_tokens"},
		{name: "unknown model", model: "m", reply: llmtest.Reply{Status: http.StatusNotFound}, key: "sk-probe-key", cause: CauseUnknownModel, limit: "max_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, bodies := probeServer(t, "sk-probe-key", func(llmtest.Request) llmtest.Reply { return tt.reply })
			c := New(Config{BaseURL: url + "/v1", APIKey: tt.key, Model: tt.model, Timeout: config.Duration(5 * time.Second)})
			err := c.Probe(t.Context())
			if got := CauseOf(err); got != tt.cause || (tt.cause == "" && err != nil) {
				t.Fatalf("Probe = %v (cause %q), want cause %q", err, got, tt.cause)
			}
			if tt.key != "sk-probe-key" {
				return // refused before the body was read
			}
			b := bodies()
			if len(b) != 1 || b[0][tt.limit] != 1.0 || b[0]["model"] != tt.model {
				t.Errorf("requests %v, want one for %s with %s: 1", b, tt.model, tt.limit)
			}
		})
	}
}

func TestProbeUnreachableAndEchoedKey(t *testing.T) {
	dead := httptest.NewServer(nil)
	dead.Close()
	c := New(Config{BaseURL: dead.URL + "/v1", APIKey: "k", Model: "m", Timeout: config.Duration(5 * time.Second)})
	if err := c.Probe(t.Context()); CauseOf(err) != CauseUnreachable || Hint(err) == "" {
		t.Errorf("Probe = %v (cause %q), want unreachable with a hint", err, CauseOf(err))
	}

	const key = "sk-echoed-by-the-provider"
	url, _ := probeServer(t, "", func(llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Status: http.StatusUnauthorized, Content: "Incorrect API key provided: " + key}
	})
	c = New(Config{BaseURL: url + "/v1", APIKey: key, Model: "m", Timeout: config.Duration(5 * time.Second)})
	err := c.Probe(t.Context())
	if err == nil || strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "provided: ******") || CauseOf(err) != CauseBadKey {
		t.Errorf("Probe = %v (cause %q), want bad_key with the key masked", err, CauseOf(err))
	}
}
