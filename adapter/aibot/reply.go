package aibot

import (
	"fmt"
	"strings"
)

// Reply is the plaintext of a passive reply (被动回复): the callback mode's
// answer in the HTTP response, before Codec.Seal. The long connection answers
// with frames instead. Build it with PassiveStream or PassiveText; the zero
// Reply is the empty reply.
//
// The empty reply is an HTTP 200 with an empty body, not an encrypted {}:
// WeCom documents "可以选择直接回复空包" and feedback_event "仅支持回复空包",
// an empty body is what the app channel already answers, and it needs no
// sealing, so nothing in it can be wrong.
type Reply struct {
	MsgType string      `json:"msgtype"`
	Stream  *StreamBody `json:"stream,omitempty"`
	Text    *Text       `json:"text,omitempty"`
}

// StreamBody is one snapshot of a streamed answer. Content is the whole text
// so far (each reply replaces what WeCom shows), at most MaxStreamBytes.
type StreamBody struct {
	ID       string       `json:"id"`
	Finish   bool         `json:"finish"`
	Content  string       `json:"content"`
	Feedback *FeedbackRef `json:"feedback,omitempty"`
}

// FeedbackRef asks WeCom for feedback buttons; their clicks come back as
// feedback_event with this id. At most 256 bytes.
type FeedbackRef struct {
	ID string `json:"id"`
}

// MaxFeedbackIDBytes is WeCom's limit on a feedback id.
const MaxFeedbackIDBytes = 256

// PassiveStream is a stream snapshot. feedbackID is set only when not empty;
// WeCom honours it on the first reply of a stream only, so the caller passes
// it there and "" afterwards.
func PassiveStream(id, content string, finish bool, feedbackID string) Reply {
	s := &StreamBody{ID: id, Finish: finish, Content: content}
	if feedbackID != "" {
		s.Feedback = &FeedbackRef{ID: feedbackID}
	}
	return Reply{MsgType: TypeStream, Stream: s}
}

// PassiveText is a plain text reply: the welcome for enter_chat (the only
// callback a text reply is allowed for). Blank content gives the empty
// Reply: an unset welcome is answered with nothing, not an empty bubble.
func PassiveText(content string) Reply {
	if strings.TrimSpace(content) == "" {
		return Reply{}
	}
	return Reply{MsgType: TypeText, Text: &Text{Content: content}}
}

// IsEmpty reports whether r is the empty reply.
func (r Reply) IsEmpty() bool { return r.MsgType == "" }

// Marshal returns the reply's JSON. It refuses the empty reply (it has no
// JSON), a stream without id, content over MaxStreamBytes and a feedback id
// over MaxFeedbackIDBytes: WeCom would reject them.
func (r Reply) Marshal() ([]byte, error) {
	if r.IsEmpty() {
		return nil, fmt.Errorf("aibot: the empty reply has no body")
	}
	if s := r.Stream; s != nil {
		if s.ID == "" {
			return nil, fmt.Errorf("aibot: stream reply without id")
		}
		if len(s.Content) > MaxStreamBytes {
			return nil, fmt.Errorf("aibot: stream content of %d bytes, limit %d (use Cut)", len(s.Content), MaxStreamBytes)
		}
		if s.Feedback != nil && len(s.Feedback.ID) > MaxFeedbackIDBytes {
			return nil, fmt.Errorf("aibot: feedback id of %d bytes, limit %d", len(s.Feedback.ID), MaxFeedbackIDBytes)
		}
	}
	return marshal(r)
}
