package aibot

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Message types of an inbound body (msgtype).
const (
	TypeText   = "text"
	TypeImage  = "image"
	TypeMixed  = "mixed"
	TypeVoice  = "voice"
	TypeFile   = "file"
	TypeVideo  = "video"
	TypeStream = "stream" // a refresh poll (callback mode only); also a reply's type
	// TypeMarkdown is a reply's type only: a long-connection message or a
	// response_url POST.
	TypeMarkdown = "markdown"
	TypeEvent    = "event"
)

// Event types (event.eventtype).
const (
	EventEnterChat    = "enter_chat"
	EventTemplateCard = "template_card_event"
	EventFeedback     = "feedback_event"
	EventDisconnected = "disconnected_event" // long connection only
)

// Chat types (chattype).
const (
	ChatSingle = "single"
	ChatGroup  = "group"
)

// Feedback types of a feedback_event.
const (
	FeedbackAccurate   = 1
	FeedbackInaccurate = 2
	FeedbackCancel     = 3
)

// Message is one inbound body, from a callback (after decryption) or from the
// body of a long-connection frame. Exactly the body named by MsgType is set
// when WeCom sends it; the others are nil.
type Message struct {
	// MsgID is opaque: base64-like in callbacks, hex on the long connection.
	MsgID    string `json:"msgid"`
	AIBotID  string `json:"aibotid"`
	ChatID   string `json:"chatid"` // group chats only
	ChatType string `json:"chattype"`
	From     From   `json:"from"`
	// ResponseURL allows one later POST within an hour (PostResponse).
	ResponseURL string `json:"response_url"`
	CreateTime  int64  `json:"create_time"` // events only, Unix seconds
	MsgType     string `json:"msgtype"`

	Text   *Text   `json:"text"`
	Image  *Media  `json:"image"`
	Mixed  *Mixed  `json:"mixed"`
	Voice  *Voice  `json:"voice"`
	File   *Media  `json:"file"`
	Video  *Media  `json:"video"`
	Stream *Stream `json:"stream"`
	Event  *Event  `json:"event"`
	Quote  *Quote  `json:"quote"`
}

// From is the sender. CorpID is set on events from external users only.
type From struct {
	UserID string `json:"userid"`
	CorpID string `json:"corpid"`
}

// Text is a text body (text, and text items of mixed and quote).
type Text struct {
	Content string `json:"content"`
}

// Voice carries WeCom's speech-to-text transcript; no audio is sent.
type Voice struct {
	Content string `json:"content"`
}

// Media is an image, file or video: a URL valid for 5 minutes whose bytes are
// AES-256-CBC encrypted. AESKey is set on the long connection only; callbacks
// use the bot's EncodingAESKey.
type Media struct {
	URL    string `json:"url"`
	AESKey string `json:"aeskey"`
}

// Mixed is text and images in one message.
type Mixed struct {
	Items []MixedItem `json:"msg_item"`
}

// MixedItem is one part of a mixed message: a text or an image.
type MixedItem struct {
	MsgType string `json:"msgtype"`
	Text    *Text  `json:"text"`
	Image   *Media `json:"image"`
}

// Stream names the stream a refresh poll asks about: the id of our first reply.
type Stream struct {
	ID string `json:"id"`
}

// Quote is the message the user quoted: MsgType and its body.
type Quote struct {
	MsgType string `json:"msgtype"`
	Text    *Text  `json:"text"`
	Image   *Media `json:"image"`
	Mixed   *Mixed `json:"mixed"`
	Voice   *Voice `json:"voice"`
	File    *Media `json:"file"`
	Video   *Media `json:"video"`
}

// Event is the body of msgtype "event". EventType names it; the body of that
// name is set for the events that carry one.
type Event struct {
	EventType    string             `json:"eventtype"`
	Feedback     *Feedback          `json:"feedback_event"`
	TemplateCard *TemplateCardEvent `json:"template_card_event"`
}

// Feedback is a user's verdict on an answer whose first reply set a feedback id.
type Feedback struct {
	ID      string `json:"id"`
	Type    int    `json:"type"` // FeedbackAccurate, FeedbackInaccurate or FeedbackCancel
	Content string `json:"content"`
	// InaccurateReasons: 1 unrelated, 2 incomplete, 3 wrong, 4 data analysis wrong.
	InaccurateReasons []int `json:"inaccurate_reason_list"`
}

// TemplateCardEvent is a click on a template card. WeCom's field table spells
// the keys cardtype/eventkey and its example card_type/event_key; both are
// read, the underscored spelling winning when both are present.
type TemplateCardEvent struct {
	CardType      string
	EventKey      string
	TaskID        string
	SelectedItems []SelectedItem
}

// SelectedItem is one answered question of a vote or select card.
type SelectedItem struct {
	QuestionKey string
	OptionIDs   []string
}

// UnmarshalJSON reads both spellings of card_type and event_key.
func (e *TemplateCardEvent) UnmarshalJSON(b []byte) error {
	var w struct {
		CardType      string `json:"card_type"`
		CardType2     string `json:"cardtype"`
		EventKey      string `json:"event_key"`
		EventKey2     string `json:"eventkey"`
		TaskID        string `json:"task_id"`
		SelectedItems struct {
			Items []struct {
				QuestionKey string `json:"question_key"`
				OptionIDs   struct {
					IDs []string `json:"option_id"`
				} `json:"option_ids"`
			} `json:"selected_item"`
		} `json:"selected_items"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*e = TemplateCardEvent{
		CardType: firstNonEmpty(w.CardType, w.CardType2),
		EventKey: firstNonEmpty(w.EventKey, w.EventKey2),
		TaskID:   w.TaskID,
	}
	for _, it := range w.SelectedItems.Items {
		e.SelectedItems = append(e.SelectedItems, SelectedItem{QuestionKey: it.QuestionKey, OptionIDs: it.OptionIDs.IDs})
	}
	return nil
}

// firstNonEmpty returns the first non-empty string.
func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ParseMessage reads one inbound body. It refuses, wrapping ErrMalformed:
// bytes that are not one JSON object; a missing or empty msgtype; a missing
// msgid, except on a stream refresh and a disconnected_event (neither is
// deduped or stored, so neither needs one); a stream refresh without
// stream.id and an event without event.eventtype (nothing can answer them).
//
// A msgtype or eventtype this package does not know is not an error: the
// body is still a well-formed message from WeCom (the 2026-03 revision added
// video this way), the caller answers it politely, and refusing it would make
// WeCom redeliver. Known reports whether the type is one of the above.
func ParseMessage(plain []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(plain, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if m.MsgType == "" {
		return Message{}, fmt.Errorf("%w: msgtype is missing", ErrMalformed)
	}
	switch {
	case m.MsgType == TypeStream:
		if m.Stream == nil || m.Stream.ID == "" {
			return Message{}, fmt.Errorf("%w: stream refresh without stream.id", ErrMalformed)
		}
	case m.MsgType == TypeEvent:
		if m.Event == nil || m.Event.EventType == "" {
			return Message{}, fmt.Errorf("%w: event without eventtype", ErrMalformed)
		}
		if m.MsgID == "" && m.Event.EventType != EventDisconnected {
			return Message{}, fmt.Errorf("%w: %s event without msgid", ErrMalformed, m.Event.EventType)
		}
	case m.MsgID == "":
		return Message{}, fmt.Errorf("%w: %s message without msgid", ErrMalformed, m.MsgType)
	}
	return m, nil
}

// Known reports whether MsgType (and for events, EventType) is one this
// package reads.
func (m Message) Known() bool {
	switch m.MsgType {
	case TypeText, TypeImage, TypeMixed, TypeVoice, TypeFile, TypeVideo, TypeStream:
		return true
	case TypeEvent:
		if m.Event == nil {
			return false
		}
		switch m.Event.EventType {
		case EventEnterChat, EventTemplateCard, EventFeedback, EventDisconnected:
			return true
		}
	}
	return false
}

// IsGroup reports whether the message comes from a group chat.
func (m Message) IsGroup() bool { return m.ChatType == ChatGroup }

// Sender is the userid of the user who wrote the message.
func (m Message) Sender() string { return m.From.UserID }

// Conversation is the key of the conversation the message belongs to: the
// chat id in a group chat (one conversation for the whole group, each turn
// marked with its Sender by the caller), the sender's userid in a single chat.
// It is unique per bot only; the caller scopes it by AIBotID.
func (m Message) Conversation() string {
	if m.IsGroup() {
		return m.ChatID
	}
	return m.From.UserID
}

// Prompt returns the text the model is to answer and whether there is any.
//
//   - text: its content; in a group chat without its leading @mention
//     (StripMention).
//   - voice: WeCom's transcript.
//   - mixed: its text items joined with "\n" (then the mention is stripped);
//     images are left out.
//   - image, file, video, stream, event and unknown types: no text.
//
// A quote comes before the user's text as quoted context: each line of the
// quoted text prefixed "> ", then an empty line, then the user's text. A
// quoted image, file or video is the line "> [image]" ("[file]", "[video]").
// The quote alone is no question: without text of the user's own there is
// no prompt.
func (m Message) Prompt() (string, bool) {
	text := bodyText(m.MsgType, m.Text, m.Voice, m.Mixed)
	if m.IsGroup() {
		text = StripMention(text)
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return "", false
	}
	if q := quoteText(m.Quote); q != "" {
		var b strings.Builder
		for line := range strings.SplitSeq(q, "\n") {
			b.WriteString("> ")
			b.WriteString(line)
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
		b.WriteString(text)
		text = b.String()
	}
	return text, true
}

// bodyText is the text of a message or quote body of type msgType: a
// text's content, a voice's transcript, a mixed body's text items; "" for
// the other types.
func bodyText(msgType string, text *Text, voice *Voice, mixed *Mixed) string {
	switch msgType {
	case TypeText:
		if text != nil {
			return text.Content
		}
	case TypeVoice:
		if voice != nil {
			return voice.Content
		}
	case TypeMixed:
		return mixedText(mixed)
	}
	return ""
}

func mixedText(mx *Mixed) string {
	if mx == nil {
		return ""
	}
	var parts []string
	for _, it := range mx.Items {
		if it.MsgType == TypeText && it.Text != nil && strings.TrimSpace(it.Text.Content) != "" {
			parts = append(parts, it.Text.Content)
		}
	}
	return strings.Join(parts, "\n")
}

// quoteText is the quoted message as text, "" when there is nothing to show.
func quoteText(q *Quote) string {
	if q == nil {
		return ""
	}
	s := bodyText(q.MsgType, q.Text, q.Voice, q.Mixed)
	switch q.MsgType {
	case TypeMixed:
		if s == "" && q.Mixed != nil && len(q.Mixed.Items) > 0 {
			s = "[image]"
		}
	case TypeImage, TypeFile, TypeVideo:
		s = "[" + q.MsgType + "]"
	}
	return strings.TrimSpace(s)
}

// StripMention removes a leading @mention from a group message: after
// leading white space, an "@", the run of non-space characters after it
// (the bot's display name, which the callback does not carry, so any name is
// taken), and the white space that follows, or the end of the text. WeCom
// puts U+2005 after a mention; unicode.IsSpace covers it. A name that itself
// contains a space loses only its first word. Only the first mention goes:
// "@Bot @alice hi" keeps "@alice hi", a mention of someone else the user wrote.
func StripMention(s string) string {
	t := strings.TrimLeftFunc(s, unicode.IsSpace)
	if !strings.HasPrefix(t, "@") {
		return s
	}
	end := strings.IndexFunc(t[1:], unicode.IsSpace)
	if end == 0 {
		return s // "@ hello": no name
	}
	if end < 0 {
		if utf8.RuneCountInString(t) == 1 {
			return s
		}
		return ""
	}
	return strings.TrimLeftFunc(t[1+end:], unicode.IsSpace)
}
