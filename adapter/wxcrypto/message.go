package wxcrypto

import "fmt"

// Message is a decrypted WeCom app callback: a user message or an event.
// Fields the MsgType does not use are empty. Location values stay text, as
// WeCom sends them, so nothing is lost to float formatting.
type Message struct {
	ToUserName   string
	FromUserName string
	CreateTime   int64
	MsgType      string // text, image, voice, video, location, link, file or event

	Content string
	MsgID   string // absent for events; see NOTES.md on deduplication

	Event    string
	EventKey string

	PicURL       string
	MediaID      string
	Format       string
	ThumbMediaID string

	Title       string
	Description string
	URL         string

	LocationX string
	LocationY string
	Scale     string
	Label     string

	AgentID int64

	// Token and OpenKfID come with Event "kf_msg_or_event" (微信客服): the
	// account with news and the Token for kf/sync_msg, valid 10 minutes.
	// That callback has no FromUserName and no MsgId.
	Token    string
	OpenKfID string
}

// ParseMessage reads the decrypted XML of an app callback. Malformed XML, or
// a CreateTime or AgentID that is not an integer, is ErrXML; a MsgType
// outside the documented set is ErrMsgType, so a new WeCom message kind is
// refused visibly instead of being handled as an empty text.
func ParseMessage(plain []byte) (Message, error) {
	m, err := parseMessage(plain)
	if err != nil {
		return Message{}, err
	}
	switch m.MsgType {
	case "text", "image", "voice", "video", "location", "link", "file", "event":
		return m, nil
	}
	// The type is WeCom's, not user text, but may be long: don't echo it.
	return Message{}, fmt.Errorf("%w: %d bytes", ErrMsgType, len(m.MsgType))
}

// parseMessage is ParseMessage without the MsgType check, so the fuzz test
// can compare every well-formed document with encoding/xml.
func parseMessage(plain []byte) (Message, error) {
	var m Message
	r := xmlReader{s: string(plain)}
	empty, err := r.open()
	if err != nil {
		return Message{}, err
	}
	for !empty {
		name, childEmpty, ok, err := r.child()
		if err != nil {
			return Message{}, err
		}
		if !ok {
			break
		}
		var dst *string
		var num *int64
		switch name {
		case "ToUserName":
			dst = &m.ToUserName
		case "FromUserName":
			dst = &m.FromUserName
		case "CreateTime":
			num = &m.CreateTime
		case "MsgType":
			dst = &m.MsgType
		case "Content":
			dst = &m.Content
		case "MsgId":
			dst = &m.MsgID
		case "Event":
			dst = &m.Event
		case "EventKey":
			dst = &m.EventKey
		case "PicUrl":
			dst = &m.PicURL
		case "MediaId":
			dst = &m.MediaID
		case "Format":
			dst = &m.Format
		case "ThumbMediaId":
			dst = &m.ThumbMediaID
		case "Title":
			dst = &m.Title
		case "Description":
			dst = &m.Description
		case "Url":
			dst = &m.URL
		case "Location_X":
			dst = &m.LocationX
		case "Location_Y":
			dst = &m.LocationY
		case "Scale":
			dst = &m.Scale
		case "Label":
			dst = &m.Label
		case "AgentID":
			num = &m.AgentID
		case "Token":
			dst = &m.Token
		case "OpenKfId":
			dst = &m.OpenKfID
		}
		t, err := r.content(name, childEmpty, dst != nil || num != nil)
		if err != nil {
			return Message{}, err
		}
		switch {
		case dst != nil:
			*dst = t
		case num != nil:
			// Checked at each occurrence, as encoding/xml does: a bad
			// value is refused even if a later duplicate is valid.
			if *num, err = parseInt(t, name); err != nil {
				return Message{}, err
			}
		}
	}
	if err := r.close(); err != nil {
		return Message{}, err
	}
	return m, nil
}
