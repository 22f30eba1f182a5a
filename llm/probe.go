package llm

import (
	"context"
	"errors"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// probeTimeout caps a Probe below llm.timeout, which is sized for whole
// answers: a one-token answer that takes longer means a model too slow
// to use, and the operator running `check -online` is waiting.
const probeTimeout = 20 * time.Second

// Probe makes the smallest chat completion the model answers: one short
// user message and an answer of at most one token, whose text is not
// looked at. It tells whether base_url, api_key and model are accepted
// where the service calls them (`wecombot check -online`); the models list
// would not: it leaves the model's name and the chat endpoint unchecked,
// and some OpenAI-compatible providers do not serve it. The error is an
// *Error as for the service's calls (CauseOf, Hint), with the key masked.
func (c *Client) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(c.timeout, probeTimeout))
	defer cancel()
	req := openai.ChatCompletionRequest{
		Model:    c.model,
		Messages: []openai.ChatCompletionMessage{{Role: RoleUser, Content: "ping"}},
	}
	// max_tokens, deprecated by OpenAI, is what every compatible provider
	// knows; max_completion_tokens only where max_tokens is refused.
	req.MaxTokens = 1 //lint:ignore SA1019 see above
	ctx, retryAfter := withRetryAfter(ctx)
	_, err := c.api.CreateChatCompletion(ctx, req)
	if errors.Is(err, openai.ErrReasoningModelMaxTokensDeprecated) {
		// go-openai refuses max_tokens for the reasoning models it knows,
		// before sending; they take max_completion_tokens instead, which
		// older compatible providers may not know.
		req.MaxTokens, req.MaxCompletionTokens = 0, 1 //lint:ignore SA1019 see above
		_, err = c.api.CreateChatCompletion(ctx, req)
	}
	if err != nil {
		return c.fail("probe", err, retryAfter)
	}
	return nil
}
