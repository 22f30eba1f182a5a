package llmtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// TestEmptyContentRefused is the trap: go-openai drops an empty Content
// (omitempty), and the API refuses the {"role":"user"} that remains.
func TestEmptyContentRefused(t *testing.T) {
	var called atomic.Bool
	fake, client := newClient(t, func(r Request) Reply { called.Store(true); return Echo(r) })
	_, err := client.CreateChatCompletion(context.Background(), chat("system", "first", "", "second"))
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusBadRequest {
		t.Fatalf("err = %v, want 400", err)
	}
	if apiErr.Param == nil || *apiErr.Param != "messages.[2].content" || !strings.Contains(apiErr.Message, "messages[2].content") {
		t.Errorf("error does not name the message: %+v", apiErr)
	}
	if called.Load() {
		t.Error("respond was called for a refused request")
	}
	if r := fake.Requests(); len(r) != 1 || r[0].Messages[2].Content != "" {
		t.Errorf("the refused request was not recorded: %+v", r)
	}
}
