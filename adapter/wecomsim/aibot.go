package wecomsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The AI bot (智能机器人) side of the simulator: message bodies as WeCom
// sends them (this file), the callback driver that plays API mode
// (aibot_callback.go), the one-use response_url served here, and the long
// connection (aibot_ws.go).

// Paths the simulator serves for AI bots, under any prefix like the rest of
// Handler. AIBotResponsePath is WeCom's; AIBotWSPath is the simulator's own
// stand-in for wss://openws.work.weixin.qq.com, which has no path.
const (
	AIBotResponsePath = "/cgi-bin/aibot/response"
	AIBotWSPath       = "/aibot/ws"
)

// AIBotMaxContentBytes is the limit WeCom sets on a stream's content and on a
// response_url's markdown, in bytes of UTF-8.
const AIBotMaxContentBytes = 20480

// responseURLLifetime is how long a response_url may be used ("有效期为 1 个小时").
const responseURLLifetime = time.Hour

// Errcodes the simulator answers. 846605 and 846608 are WeCom's observed
// codes; WeCom publishes no catalogue for the others, so these values are
// the simulator's own and a service must treat any non-zero errcode as
// failure rather than match them.
const (
	AIBotErrInvalidReqID      = 846605 // a reply to a req_id that is unknown or of the wrong kind
	AIBotErrStreamExpired     = 846608 // a stream frame after the stream's 6 minutes (or after ExpireStream)
	AIBotErrInvalidSecret     = 40001  // aibot_subscribe with an unknown bot_id or a wrong secret
	AIBotErrBadRequest        = 40058  // malformed frame or body, unknown cmd, command before subscribing
	AIBotErrContentTooLong    = 45002  // content over AIBotMaxContentBytes
	AIBotErrNoConversation    = 48002  // aibot_send_msg to a chat that never wrote to the bot
	AIBotErrResponseCodeBad   = 93000  // response_url with an unknown response_code
	AIBotErrResponseCodeUsed  = 93001  // response_url used a second time
	AIBotErrResponseCodeStale = 93002  // response_url used after its hour
)

// AIBot is an AI bot set up for the long connection, as the admin console
// shows it.
type AIBot struct {
	BotID  string
	Secret string
}

// AIBotBody is the JSON WeCom delivers for an AI bot, encrypted in API mode
// and as a frame's body on the long connection. Field order follows WeCom's
// samples, so a marshalled body matches them byte for byte.
type AIBotBody struct {
	MsgID       string          `json:"msgid"`
	CreateTime  int64           `json:"create_time,omitempty"`
	AIBotID     string          `json:"aibotid"`
	ChatID      string          `json:"chatid,omitempty"`
	ChatType    string          `json:"chattype"`
	From        AIBotFrom       `json:"from"`
	ResponseURL string          `json:"response_url,omitempty"`
	MsgType     string          `json:"msgtype"`
	Text        *AIBotContent   `json:"text,omitempty"`
	Voice       *AIBotContent   `json:"voice,omitempty"`
	Image       *AIBotURL       `json:"image,omitempty"`
	File        *AIBotURL       `json:"file,omitempty"`
	Video       *AIBotURL       `json:"video,omitempty"`
	Mixed       *AIBotMixed     `json:"mixed,omitempty"`
	Stream      *AIBotStreamRef `json:"stream,omitempty"`
	Event       map[string]any  `json:"event,omitempty"`
	Quote       *AIBotQuote     `json:"quote,omitempty"`
}

// aibotReplyBody is what the simulator reads of a service's answer: a
// passive reply in callback mode (stream or text) or the body of an
// aibot_respond_msg frame (stream or markdown).
type aibotReplyBody struct {
	MsgType string `json:"msgtype"`
	Stream  *struct {
		ID       string `json:"id"`
		Finish   bool   `json:"finish"`
		Content  string `json:"content"`
		Feedback *struct {
			ID string `json:"id"`
		} `json:"feedback"`
	} `json:"stream"`
	Text     *AIBotContent `json:"text"`
	Markdown *AIBotContent `json:"markdown"`
}

// AIBotFrom is the sender; CorpID appears only on events from external users.
type AIBotFrom struct {
	CorpID string `json:"corpid,omitempty"`
	UserID string `json:"userid"`
}

// AIBotContent is a text body, or a voice body carrying WeCom's transcript.
type AIBotContent struct {
	Content string `json:"content"`
}

// AIBotURL is an image, file or video body. AESKey is set on the long
// connection only.
type AIBotURL struct {
	URL    string `json:"url"`
	AESKey string `json:"aeskey,omitempty"`
}

// AIBotMixed is a mixed text-and-image body.
type AIBotMixed struct {
	MsgItem []AIBotItem `json:"msg_item"`
}

// AIBotItem is one part of a mixed body: MsgType "text" or "image".
type AIBotItem struct {
	MsgType string        `json:"msgtype"`
	Text    *AIBotContent `json:"text,omitempty"`
	Image   *AIBotURL     `json:"image,omitempty"`
}

// AIBotStreamRef names the stream a refresh callback asks about.
type AIBotStreamRef struct {
	ID string `json:"id"`
}

// AIBotQuote is a quoted message: MsgType and the matching body.
type AIBotQuote struct {
	MsgType string        `json:"msgtype"`
	Text    *AIBotContent `json:"text,omitempty"`
	Voice   *AIBotContent `json:"voice,omitempty"`
	Image   *AIBotURL     `json:"image,omitempty"`
	File    *AIBotURL     `json:"file,omitempty"`
	Video   *AIBotURL     `json:"video,omitempty"`
	Mixed   *AIBotMixed   `json:"mixed,omitempty"`
}

// JSON marshals b as WeCom sends it.
func (b AIBotBody) JSON() []byte {
	out, err := json.Marshal(b)
	if err != nil {
		// Only Event can hold something unmarshalable, and the builders put
		// strings and numbers there.
		panic(fmt.Sprintf("wecomsim: marshal AI bot body: %v", err))
	}
	return out
}

// Quoting returns b quoting q.
func (b AIBotBody) Quoting(q AIBotQuote) AIBotBody {
	b.Quote = &q
	return b
}

// newAIBotBody is the common head of every body. chatID "" makes a single
// chat. Message ids are opaque strings; these look like the docs' ones.
func newAIBotBody(botID, chatID, userID, msgType string) AIBotBody {
	b := AIBotBody{MsgID: "CAIQ" + randomString(18), AIBotID: botID, ChatType: "single",
		From: AIBotFrom{UserID: userID}, MsgType: msgType}
	if chatID != "" {
		b.ChatID, b.ChatType = chatID, "group"
	}
	return b
}

// AIBotText is a text message from userID in a single chat.
func AIBotText(botID, userID, content string) AIBotBody {
	b := newAIBotBody(botID, "", userID, "text")
	b.Text = &AIBotContent{Content: content}
	return b
}

// AIBotGroupText is a text message in group chatID. Groups deliver only
// messages that @mention the bot, and the text keeps the "@BotName " prefix.
func AIBotGroupText(botID, chatID, userID, botName, content string) AIBotBody {
	b := newAIBotBody(botID, chatID, userID, "text")
	b.Text = &AIBotContent{Content: "@" + botName + " " + content}
	return b
}

// AIBotVoice is a voice message (single chats only): WeCom sends its
// speech-to-text transcript, never audio.
func AIBotVoice(botID, userID, transcript string) AIBotBody {
	b := newAIBotBody(botID, "", userID, "voice")
	b.Voice = &AIBotContent{Content: transcript}
	return b
}

// AIBotImage is an image message (single chats only).
func AIBotImage(botID, userID, url string) AIBotBody {
	b := newAIBotBody(botID, "", userID, "image")
	b.Image = &AIBotURL{URL: url}
	return b
}

// AIBotFile is a file message (single chats only).
func AIBotFile(botID, userID, url string) AIBotBody {
	b := newAIBotBody(botID, "", userID, "file")
	b.File = &AIBotURL{URL: url}
	return b
}

// AIBotMixedMessage is a mixed message; chatID "" makes a single chat. In a
// group the first text item should start with "@BotName".
func AIBotMixedMessage(botID, chatID, userID string, items ...AIBotItem) AIBotBody {
	b := newAIBotBody(botID, chatID, userID, "mixed")
	b.Mixed = &AIBotMixed{MsgItem: items}
	return b
}

// MixedText is a text part of a mixed message.
func MixedText(content string) AIBotItem {
	return AIBotItem{MsgType: "text", Text: &AIBotContent{Content: content}}
}

// MixedImage is an image part of a mixed message.
func MixedImage(url string) AIBotItem {
	return AIBotItem{MsgType: "image", Image: &AIBotURL{URL: url}}
}

// TextQuote quotes a text, for AIBotBody.Quoting.
func TextQuote(content string) AIBotQuote {
	return AIBotQuote{MsgType: "text", Text: &AIBotContent{Content: content}}
}

// ImageQuote quotes an image.
func ImageQuote(url string) AIBotQuote {
	return AIBotQuote{MsgType: "image", Image: &AIBotURL{URL: url}}
}

// AIBotRefresh is the stream refresh WeCom polls with (msgtype "stream"),
// for the chat and sender of msg. It carries no response_url.
func AIBotRefresh(msg AIBotBody, streamID string) AIBotBody {
	b := AIBotBody{MsgID: "CAIQ" + randomString(18), AIBotID: msg.AIBotID, ChatID: msg.ChatID,
		ChatType: msg.ChatType, From: msg.From, MsgType: "stream", Stream: &AIBotStreamRef{ID: streamID}}
	return b
}

// AIBotEnterChat is the enter_chat event: the user's first entry of the day
// into the single chat.
func AIBotEnterChat(botID, userID string, at time.Time) AIBotBody {
	b := newAIBotBody(botID, "", userID, "event")
	b.CreateTime = at.Unix()
	b.Event = map[string]any{"eventtype": "enter_chat"}
	return b
}

// AIBotFeedback is a feedback_event on the reply that set feedbackID: typ
// 1 accurate, 2 inaccurate, 3 cancel; reasons 1..4 for inaccurate.
func AIBotFeedback(botID, userID, feedbackID string, typ int, content string, reasons []int, at time.Time) AIBotBody {
	b := newAIBotBody(botID, "", userID, "event")
	b.CreateTime = at.Unix()
	fb := map[string]any{"id": feedbackID, "type": typ}
	if content != "" {
		fb["content"] = content
	}
	if len(reasons) > 0 {
		fb["inaccurate_reason_list"] = reasons
	}
	b.Event = map[string]any{"eventtype": "feedback_event", "feedback_event": fb}
	return b
}

// eventType is b's event type, or "" for a message.
func (b AIBotBody) eventType() string {
	if b.MsgType != "event" {
		return ""
	}
	s, _ := b.Event["eventtype"].(string)
	return s
}

// chatKey names the conversation a body comes from: the chat id in a group,
// the sender in a single chat, which is also what aibot_send_msg takes.
func (b AIBotBody) chatKey() string {
	if b.ChatType == "group" {
		return b.ChatID
	}
	return b.From.UserID
}

// AIBotResponse is one POST to a response_url, accepted or refused.
type AIBotResponse struct {
	Code       string // the response_code
	BotID      string
	MsgID      string // the message whose callback carried the URL
	At         time.Time
	MsgType    string // "markdown" or "template_card"
	Content    string // markdown content
	FeedbackID string
	Raw        string // the body as posted
	ErrCode    int    // what the simulator answered; 0 accepted
}

type responseCode struct {
	botID, msgID string
	issued       time.Time
	used         bool
}

// IssueResponseURL registers a fresh one-use response_url for the message
// msgID of botID and returns it. base is where Handler is served (scheme,
// host and any prefix), since the simulator does not know its own address.
func (s *Server) IssueResponseURL(base, botID, msgID string) string {
	code := randomString(24)
	s.mu.Lock()
	s.ai.codes[code] = &responseCode{botID: botID, msgID: msgID, issued: s.now()}
	s.mu.Unlock()
	return strings.TrimSuffix(base, "/") + AIBotResponsePath + "?response_code=" + code
}

// AIBotResponses returns every POST to a response_url so far, in arrival
// order; msgID "" returns all, otherwise those for that message.
func (s *Server) AIBotResponses(msgID string) []AIBotResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AIBotResponse
	for _, r := range s.ai.responses {
		if msgID == "" || r.MsgID == msgID {
			out = append(out, r)
		}
	}
	return out
}

// AIBotWait blocks until cond holds or ctx is done. cond is evaluated
// whenever the AI bot state changes (a frame, a connection, a response_url
// call), so tests wait for the service without sleeping. cond may call the
// Server's accessors.
func (s *Server) AIBotWait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.ai.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changedLocked wakes AIBotWait. s.mu must be held.
func (s *Server) changedLocked() {
	close(s.ai.changed)
	s.ai.changed = make(chan struct{})
}

// serveAIBot serves the AI bot paths; it reports false for any other path.
func (s *Server) serveAIBot(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case strings.HasSuffix(r.URL.Path, AIBotResponsePath):
		s.serveResponseURL(w, r)
	case strings.HasSuffix(r.URL.Path, AIBotWSPath):
		s.serveAIBotWS(w, r)
	case strings.HasSuffix(r.URL.Path, AIBotMediaPath):
		s.serveAIBotMedia(w, r)
	default:
		return false
	}
	return true
}

// serveResponseURL is WeCom's active reply: one POST of plain JSON per
// response_code, within an hour of the callback that carried it. Any call
// with a known code uses it up, refused or not, since WeCom counts calls.
func (s *Server) serveResponseURL(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return
	}
	var in struct {
		MsgType  string `json:"msgtype"`
		Markdown *struct {
			Content  string `json:"content"`
			Feedback *struct {
				ID string `json:"id"`
			} `json:"feedback"`
		} `json:"markdown"`
		TemplateCard json.RawMessage `json:"template_card"`
	}
	parseErr := json.Unmarshal(body, &in)

	s.mu.Lock()
	defer s.mu.Unlock()
	code := r.URL.Query().Get("response_code")
	rec := AIBotResponse{Code: code, At: s.now(), Raw: string(body), MsgType: in.MsgType}
	if in.Markdown != nil {
		rec.Content = in.Markdown.Content
		if in.Markdown.Feedback != nil {
			rec.FeedbackID = in.Markdown.Feedback.ID
		}
	}
	rc := s.ai.codes[code]
	errmsg := "ok"
	switch {
	case rc == nil:
		rec.ErrCode, errmsg = AIBotErrResponseCodeBad, "invalid response_code"
	case rc.used:
		rec.ErrCode, errmsg = AIBotErrResponseCodeUsed, "response_code already used"
	case rec.At.Sub(rc.issued) > responseURLLifetime:
		rec.ErrCode, errmsg = AIBotErrResponseCodeStale, "response_code expired"
	case parseErr != nil:
		rec.ErrCode, errmsg = AIBotErrBadRequest, "invalid json"
	case in.MsgType == "markdown" && in.Markdown == nil,
		in.MsgType == "template_card" && len(in.TemplateCard) == 0,
		in.MsgType != "markdown" && in.MsgType != "template_card":
		rec.ErrCode, errmsg = AIBotErrBadRequest, "invalid msgtype or missing body"
	case len(rec.Content) > AIBotMaxContentBytes:
		rec.ErrCode, errmsg = AIBotErrContentTooLong, "content exceed max length"
	}
	if rc != nil {
		rec.BotID, rec.MsgID = rc.botID, rc.msgID
		rc.used = true
	}
	s.ai.responses = append(s.ai.responses, rec)
	s.changedLocked()
	writeJSON(w, map[string]any{"errcode": rec.ErrCode, "errmsg": errmsg})
}
