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
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: textOf(m.Content), Images: imagesOf(m.Content)})
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
		case textOf(m.Content) == "" && len(imagesOf(m.Content)) == 0:
			// The real API lets some empty strings through; refusing them all
			// is deliberate, since other compatible servers do and an empty
			// turn is a bug in the service anyway.
			return fmt.Sprintf("Invalid 'messages[%d].content': string too short. Expected a string with minimum length 1, but got an empty string instead.", i), param
		}
	}
	return "", ""
}

// textOf reads content as a string or as an array of parts, keeping the text.
func textOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// imagesOf reads the URLs of the image_url parts of content.
func imagesOf(raw json.RawMessage) []string {
	var parts []struct {
		Type     string `json:"type"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return nil
	}
	var urls []string
	for _, p := range parts {
		if p.Type == "image_url" {
			urls = append(urls, p.ImageURL.URL)
		}
	}
	return urls
}
