package kf

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SendMsgRequest is the body of kf/send_msg for a text. MsgID is left out
// when empty: some SDKs sent "" and WeCom refused it.
type SendMsgRequest struct {
	ToUser   string   `json:"touser"`
	OpenKfID string   `json:"open_kfid"`
	MsgID    string   `json:"msgid,omitempty"`
	MsgType  string   `json:"msgtype"`
	Text     SendText `json:"text"`
}

// SendText is the text of an outbound message: at most MaxTextBytes, which
// WeCom would otherwise truncate.
type SendText struct {
	Content string `json:"content"`
}

// TextMessage is a kf/send_msg of content to customer on account.
func TextMessage(account, customer, msgID, content string) SendMsgRequest {
	return SendMsgRequest{ToUser: customer, OpenKfID: account, MsgID: msgID, MsgType: TypeText,
		Text: SendText{Content: content}}
}

// SendMsgOnEventRequest is the body of kf/send_msg_on_event: a text answer
// to an event's code (a welcome_code lives 20 s and is good for one send).
type SendMsgOnEventRequest struct {
	Code    string   `json:"code"`
	MsgID   string   `json:"msgid,omitempty"`
	MsgType string   `json:"msgtype"`
	Text    SendText `json:"text"`
}

// EventText is a kf/send_msg_on_event of content for code.
func EventText(code, msgID, content string) SendMsgOnEventRequest {
	return SendMsgOnEventRequest{Code: code, MsgID: msgID, MsgType: TypeText, Text: SendText{Content: content}}
}

// sendResponse is the answer of send_msg and send_msg_on_event.
type sendResponse struct {
	status
	MsgID string `json:"msgid"`
}

// outboundIDChars is how much of the hash an outbound msgid keeps after its
// 2-byte prefix: 30 base64url characters, 180 bits.
const outboundIDChars = MaxMsgIDBytes - 2

// OutboundMsgID is the msgid of part number part of the answer to the
// message (or stored part) with id: "wb" and 30 characters of
// [0-9A-Za-z_-] from SHA-256 of id and part, 32 bytes in all. The same
// arguments always give the same msgid, so a send retried after a crash
// carries the msgid WeCom has already seen and is refused as a duplicate
// instead of being delivered twice; different parts get different msgids.
// The inbound msgid is never reused as is: it may be longer than 32 bytes
// and the second part would collide with the first.
func OutboundMsgID(id string, part int) string {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(part), 10))
	return "wb" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:outboundIDChars]
}

// Splitter cuts text into parts of at most limit bytes, in order.
type Splitter func(text string, limit int) []string

// Budget turns an answer into at most MaxParts texts of at most MaxTextBytes
// each, the most WeCom delivers for one customer message. split cuts the
// answer (the service passes its paragraph- and sentence-aware splitter);
// nil cuts at the last character boundary that fits. Parts longer than
// MaxTextBytes from split are cut again, and empty ones dropped: WeCom
// refuses empty text (44004).
//
// When more than MaxParts parts come out, the fifth keeps what fits before
// "\n" + note, ending at its last sentence end (its last character boundary
// if it has none in its second half), and note follows, so the customer sees
// that the answer goes on ("reply to continue"). An empty note just cuts.
func Budget(answer, note string, split Splitter) []string {
	if split == nil {
		split = cutRunes
	}
	var parts []string
	for _, p := range split(answer, MaxTextBytes) {
		for _, q := range cutRunes(p, MaxTextBytes) {
			if strings.TrimSpace(q) != "" {
				parts = append(parts, q)
			}
		}
	}
	if len(parts) <= MaxParts {
		return parts
	}
	last := strings.Join(parts[MaxParts-1:], "")
	if len(last) <= MaxTextBytes { // many short parts: the rest fits in one
		return append(parts[:MaxParts-1:MaxParts-1], last)
	}
	suffix := ""
	if note != "" {
		suffix = "\n" + note
	}
	room := max(MaxTextBytes-len(suffix), 0)
	head := cutRunes(last, room)
	fifth := ""
	if len(head) > 0 {
		fifth = sentenceHead(head[0])
	}
	fifth = strings.TrimRight(fifth, " \t\n") + suffix
	if len(fifth) > MaxTextBytes { // a note longer than a part
		fifth = cutRunes(fifth, MaxTextBytes)[0]
	}
	return append(parts[:MaxParts-1:MaxParts-1], fifth)
}

// sentenceMarks end a sentence; Budget's fifth part ends after one.
var sentenceMarks = []string{"。", "！", "？", "…", "\n", ". ", "! ", "? ", ".", "!", "?", "；", ";"}

// sentenceHead returns s up to and including its last sentence end, or s
// when there is none in its second half (a stub reads worse than a cut
// inside a sentence).
func sentenceHead(s string) string {
	best := -1
	for _, mark := range sentenceMarks {
		if i := strings.LastIndex(s, mark); i >= 0 && i+len(mark) > best {
			best = i + len(mark)
		}
	}
	if best < len(s)/2 {
		return s
	}
	return s[:best]
}

// cutRunes cuts s into pieces of at most limit bytes, each ending on a
// character boundary (bytes that are not UTF-8 count as characters of one
// byte). A limit below utf8.UTFMax is raised to it.
func cutRunes(s string, limit int) []string {
	limit = max(limit, utf8.UTFMax)
	var out []string
	for len(s) > limit {
		end := 0
		for end < len(s) {
			_, size := utf8.DecodeRuneInString(s[end:])
			if end+size > limit {
				break
			}
			end += size
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}
