// Package llm asks an OpenAI-compatible chat model for the next turn of a
// conversation. It knows nothing of WeCom or of storage; it turns a list of
// messages into an answer or an error, and never hangs past its timeout.
package llm

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/internal/httpclient"
)

// Config is the client's part of the `llm:` section of the configuration:
// where the model is and how long a call may take. What the conversation
// holds and how calls are retried and limited are the pipeline's keys of the
// section (adapter.LLMConfig).
type Config struct {
	BaseURL string `yaml:"base_url"`
	APIKey  string `yaml:"api_key"`
	Model   string `yaml:"model"`
	// Timeout bounds a call; for a stream, the wait for each piece.
	Timeout config.Duration `yaml:"timeout"`
}

// Roles of chat messages.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one chat message. A user's message may carry Images, sent
// with its text as content parts (for models that accept images).
type Message struct {
	Role    string
	Content string
	Images  []Image
}

// Image is an image of a user's message: its bytes and their MIME type
// (image/jpeg, image/png, image/gif or image/webp).
type Image struct {
	MIME string
	Data []byte
}

// DataURL is the image as a data: URL, the form of an image_url part.
func (i Image) DataURL() string {
	return "data:" + i.MIME + ";base64," + base64.StdEncoding.EncodeToString(i.Data)
}

// ErrEmpty is returned when the conversation has no user text to answer.
var ErrEmpty = errors.New("llm: nothing to answer: the last message is empty")

// last is the last message, or ErrEmpty when there is none or it has
// neither text nor images: the check every Complete and Stream starts with.
func last(msgs []Message) (Message, error) {
	if len(msgs) == 0 {
		return Message{}, ErrEmpty
	}
	m := msgs[len(msgs)-1]
	if strings.TrimSpace(m.Content) == "" && len(m.Images) == 0 {
		return Message{}, ErrEmpty
	}
	return m, nil
}

// Client is a chat-completion client. Safe for concurrent use.
type Client struct {
	api     *openai.Client
	model   string
	key     string // masked in errors (fail)
	timeout time.Duration
}

// New returns a client for cfg. go-openai's default HTTP client has no
// timeout, so each call runs under a context with cfg.Timeout: the whole
// call for Complete, the wait between pieces for Stream. The HTTP client
// itself has none, which would cut a long stream off mid-answer.
func New(cfg Config) *Client {
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	oc.HTTPClient = &http.Client{Transport: retryAfterTransport{httpclient.NewTransport()}}
	timeout := time.Duration(cfg.Timeout)
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	return &Client{api: openai.NewClientWithConfig(oc), model: cfg.Model, key: cfg.APIKey, timeout: timeout}
}

// Complete returns the model's answer to msgs.
func (c *Client) Complete(ctx context.Context, msgs []Message) (string, error) {
	req, err := c.request(msgs)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx, retryAfter := withRetryAfter(ctx)
	resp, err := c.api.CreateChatCompletion(ctx, req)
	if err != nil {
		return "", c.fail("chat completion", err, retryAfter)
	}
	if len(resp.Choices) == 0 || strings.TrimSpace(resp.Choices[0].Message.Content) == "" {
		return "", noText("chat completion")
	}
	return resp.Choices[0].Message.Content, nil
}

// request builds the API request. go-openai drops an empty Content field
// (omitempty) and the API then refuses the whole request, so empty turns of
// the history are left out and an empty last message is an error. A
// message with images is sent as content parts: its text (if any), then
// each image as an image_url part with a data: URL.
func (c *Client) request(msgs []Message) (openai.ChatCompletionRequest, error) {
	if _, err := last(msgs); err != nil {
		return openai.ChatCompletionRequest{}, err
	}
	out := make([]openai.ChatCompletionMessage, 0, len(msgs))
	for _, m := range msgs {
		if len(m.Images) > 0 {
			out = append(out, openai.ChatCompletionMessage{Role: m.Role, MultiContent: parts(m)})
			continue
		}
		if strings.TrimSpace(m.Content) == "" {
			continue
		}
		out = append(out, openai.ChatCompletionMessage{Role: m.Role, Content: m.Content})
	}
	return openai.ChatCompletionRequest{Model: c.model, Messages: out}, nil
}

// parts is the content of m as parts: its text, then its images.
func parts(m Message) []openai.ChatMessagePart {
	var ps []openai.ChatMessagePart
	if strings.TrimSpace(m.Content) != "" {
		ps = append(ps, openai.ChatMessagePart{Type: openai.ChatMessagePartTypeText, Text: m.Content})
	}
	for _, img := range m.Images {
		ps = append(ps, openai.ChatMessagePart{Type: openai.ChatMessagePartTypeImageURL,
			ImageURL: &openai.ChatMessageImageURL{URL: img.DataURL()}})
	}
	return ps
}
