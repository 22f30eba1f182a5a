package llmtest

import (
	"encoding/json"
	"fmt"
	"strings"
)

type wireRequest struct {
	Model    string        `json:"model"`
	Messages []wireMessage `json:"messages"`
	Stream   bool          `json:"stream"`
}

type wireMessage struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	ToolCalls json.RawMessage `json:"tool_calls"`
}

func (wire *wireRequest) request() Request {
	req := Request{Model: wire.Model, Stream: wire.Stream}
	for _, m := range wire.Messages {
		text, images := contentOf(m.Content)
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: text, Images: images})
	}
	return req
}

// validate returns OpenAI's message and the offending parameter for a
// request the real API refuses with 400, or "" if it is acceptable.
func (wire *wireRequest) validate() (msg, param string) {
	if wire.Model == "" {
		return "Missing required parameter: 'model'.", "model"
	}
	if len(wire.Messages) == 0 {
		return "[] is too short - 'messages'", "messages"
	}
	for i, m := range wire.Messages {
		param := fmt.Sprintf("messages.[%d].content", i)
		null := len(m.Content) == 0 || string(m.Content) == "null"
		switch {
		case m.Role == "assistant" && null && len(m.ToolCalls) > 0:
			// The one case where the API accepts a message without content.
		case null:
			return fmt.Sprintf("Missing required parameter: 'messages[%d].content'.", i), param
		case empty(m.Content):
			// The real API lets some empty strings through; refusing them all
			// is deliberate, since other compatible servers do and an empty
			// turn is a bug in the service anyway.
			return fmt.Sprintf("Invalid 'messages[%d].content': string too short. Expected a string with minimum length 1, but got an empty string instead.", i), param
		}
	}
	return "", ""
}

// contentOf reads content as a string or as an array of parts: the text
// of its text parts, joined, and the URLs of its image_url parts.
func contentOf(raw json.RawMessage) (text string, images []string) {
	if json.Unmarshal(raw, &text) == nil {
		return text, nil
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", nil
	}
	var b strings.Builder
	for _, p := range parts {
		switch p.Type {
		case "text":
			b.WriteString(p.Text)
		case "image_url":
			images = append(images, p.ImageURL.URL)
		}
	}
	return b.String(), images
}

// empty reports whether content has neither text nor images.
func empty(raw json.RawMessage) bool {
	text, images := contentOf(raw)
	return text == "" && len(images) == 0
}
