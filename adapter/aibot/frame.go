package aibot

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// The commands of the long connection. Acks carry no cmd: they are matched
// to what they answer by headers.req_id alone.
const (
	CmdSubscribe      = "aibot_subscribe"
	CmdPing           = "ping"
	CmdMsgCallback    = "aibot_msg_callback"
	CmdEventCallback  = "aibot_event_callback"
	CmdRespondMsg     = "aibot_respond_msg"
	CmdRespondWelcome = "aibot_respond_welcome_msg"
	CmdSendMsg        = "aibot_send_msg"
)

// Frame is one JSON text message of the long connection, in either
// direction. A command has Cmd and, except ping, a Body; an ack has no Cmd,
// the req_id of what it answers, ErrCode and ErrMsg, and sometimes a Body.
type Frame struct {
	Cmd     string          `json:"cmd,omitempty"`
	Headers Headers         `json:"headers"`
	Body    json.RawMessage `json:"body,omitempty"`
	// ErrCode is nil on commands; on acks 0 means accepted.
	ErrCode *int   `json:"errcode,omitempty"`
	ErrMsg  string `json:"errmsg,omitempty"`
}

// Headers holds the req_id that ties an ack to its command and every frame
// of one reply to the callback it answers.
type Headers struct {
	ReqID string `json:"req_id"`
}

// IsAck reports whether f answers a command we sent.
func (f Frame) IsAck() bool { return f.Cmd == "" && f.ErrCode != nil }

// SubscribeBody is the body of aibot_subscribe. Secret is a credential:
// it goes on the wire and nowhere else (no log, no error, no status).
type SubscribeBody struct {
	BotID  string `json:"bot_id"`
	Secret string `json:"secret"`
}

// RespondMsg is the body of aibot_respond_msg: a stream frame (the same
// stream id on every frame of one reply, cumulative content, Finish on the
// last) or a single markdown message. The markdown shape is also the body
// of a response_url POST (PostResponse).
type RespondMsg struct {
	MsgType  string        `json:"msgtype"`
	Stream   *StreamBody   `json:"stream,omitempty"`
	Markdown *MarkdownPart `json:"markdown,omitempty"`
}

// MarkdownPart is markdown content (≤ 20,480 bytes, cut by the caller),
// with feedback buttons when Feedback is set.
type MarkdownPart struct {
	Content  string       `json:"content"`
	Feedback *FeedbackRef `json:"feedback,omitempty"`
}

// StreamReply builds one aibot_respond_msg stream frame: the same stream
// snapshot as a passive reply (PassiveStream). feedbackID is set only when
// non-empty: pass it on the first frame of the stream and "" on the others,
// since WeCom ignores it later.
func StreamReply(streamID, content string, finish bool, feedbackID string) RespondMsg {
	return RespondMsg{MsgType: TypeStream, Stream: PassiveStream(streamID, content, finish, feedbackID).Stream}
}

// MarkdownReply builds an aibot_respond_msg markdown message.
func MarkdownReply(content string) RespondMsg {
	return RespondMsg{MsgType: TypeMarkdown, Markdown: &MarkdownPart{Content: content}}
}

// WelcomeMsg is the body of aibot_respond_welcome_msg (text only here).
type WelcomeMsg struct {
	MsgType string `json:"msgtype"`
	Text    Text   `json:"text"`
}

// SendMsg is the body of aibot_send_msg. ChatID is the userid in a single
// chat and the chatid in a group. chat_type is left out: its meaning is
// undocumented and the official SDK omits it.
type SendMsg struct {
	ChatID   string       `json:"chatid"`
	MsgType  string       `json:"msgtype"`
	Markdown MarkdownPart `json:"markdown"`
}

// MarkdownSend builds an aibot_send_msg markdown message to chatID.
func MarkdownSend(chatID, content string) SendMsg {
	return SendMsg{ChatID: chatID, MsgType: TypeMarkdown, Markdown: MarkdownPart{Content: content}}
}

// NewReqID returns a req_id shaped like the official SDK's:
// {prefix}_{unix ms}_{8 hex}. The random part keeps two ids made in the
// same millisecond apart.
func NewReqID(prefix string, now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + "_" + strconv.FormatInt(now.UnixMilli(), 10) + "_" + hex.EncodeToString(b[:])
}

// command marshals a command frame with body (nil for none).
func command(cmd, reqID string, body any) ([]byte, error) {
	f := Frame{Cmd: cmd, Headers: Headers{ReqID: reqID}}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		f.Body = b
	}
	return json.Marshal(f)
}
