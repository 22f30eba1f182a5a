package kf

import (
	"encoding/json"
	"fmt"
	"strings"
)

// CallbackEvent is the Event of the app callback that announces news for a
// kf account; its Token and OpenKfId go into SyncMsgRequest.
const CallbackEvent = "kf_msg_or_event"

// Origins of a message in msg_list.
const (
	OriginCustomer     = 3 // the WeChat customer wrote it
	OriginSystem       = 4 // an event
	OriginReceptionist = 5 // a receptionist typed it in the WeCom client
)

// Message types (msgtype) of msg_list.
const (
	TypeText         = "text"
	TypeImage        = "image"
	TypeVoice        = "voice"
	TypeVideo        = "video"
	TypeFile         = "file"
	TypeLocation     = "location"
	TypeLink         = "link"
	TypeBusinessCard = "business_card"
	TypeMiniProgram  = "miniprogram"
	TypeMsgMenu      = "msgmenu"
	TypeMergedMsg    = "merged_msg"
	TypeEvent        = "event"
)

// Event types (event.event_type).
const (
	EventEnterSession         = "enter_session"
	EventMsgSendFail          = "msg_send_fail"
	EventServicerStatusChange = "servicer_status_change"
	EventSessionStatusChange  = "session_status_change"
	EventUserRecallMsg        = "user_recall_msg"
	EventServicerRecallMsg    = "servicer_recall_msg"
	EventRejectSwitchChange   = "reject_customer_msg_switch_change"
)

// Change types of a session_status_change.
const (
	ChangeFromPool    = 1 // a receptionist took it from the queue
	ChangeTransferred = 2 // moved to another receptionist
	ChangeEnded       = 3
	ChangeReopened    = 4 // a receptionist opened it again
)

// Fail types of a msg_send_fail (KF.md §4).
const (
	FailUnknown        = 0
	FailAccountDeleted = 1
	FailAppClosed      = 2
	FailExpired        = 4 // more than 48 h
	FailSessionClosed  = 5
	FailOverLimit      = 6 // over the 5-message budget
	FailRefused        = 10
)

// Limits of the API (KF.md §9).
const (
	MaxLimit       = 1000 // sync_msg page size
	MaxTextBytes   = 2048 // send_msg text.content
	MaxParts       = 5    // messages per customer message
	MaxMsgIDBytes  = 32   // outbound msgid
	MaxCursorBytes = 64
)

// SyncMsgRequest is the body of kf/sync_msg. OpenKfID is required by the
// 2024 docs; Limit 0 is left out (WeCom's default, 1000) rather than sent as 0.
type SyncMsgRequest struct {
	Cursor      string `json:"cursor,omitempty"`
	Token       string `json:"token,omitempty"`
	Limit       int    `json:"limit,omitempty"`
	VoiceFormat int    `json:"voice_format,omitempty"`
	OpenKfID    string `json:"open_kfid"`
}

// SyncMsgResponse is one page of kf/sync_msg.
type SyncMsgResponse struct {
	ErrCode    int       `json:"errcode"`
	ErrMsg     string    `json:"errmsg"`
	NextCursor string    `json:"next_cursor"`
	HasMore    int       `json:"has_more"`
	MsgList    []Message `json:"msg_list"`
	// Skipped counts entries of msg_list ParseSyncMsg left out because
	// they were not a message object or had no msgid or no msgtype: they can
	// be neither deduped nor read, and refusing the page would stop the
	// cursor forever.
	Skipped int `json:"-"`
}

// syncMsgPage is the answer with msg_list unread, so that one odd entry
// costs that entry and not the page.
type syncMsgPage struct {
	ErrCode    int               `json:"errcode"`
	ErrMsg     string            `json:"errmsg"`
	NextCursor string            `json:"next_cursor"`
	HasMore    int               `json:"has_more"`
	MsgList    []json.RawMessage `json:"msg_list"`
}

// More reports whether another page follows. An empty page may still have
// more: loop on this, never on len(MsgList).
func (r SyncMsgResponse) More() bool { return r.HasMore == 1 }

// Cursor is the cursor to store after this page: NextCursor, or stored when
// WeCom sent none, since a stored cursor must never become "" (that would
// replay 3 days of history).
func (r SyncMsgResponse) Cursor(stored string) string {
	if r.NextCursor == "" {
		return stored
	}
	return r.NextCursor
}

// Message is one entry of msg_list. Exactly the body named by MsgType is set
// when WeCom sends it. For events OpenKfID and ExternalUserID are empty at
// the top level (they are inside Event); Account and Customer read either.
type Message struct {
	MsgID          string `json:"msgid"`
	OpenKfID       string `json:"open_kfid,omitempty"`
	ExternalUserID string `json:"external_userid,omitempty"`
	SendTime       int64  `json:"send_time"` // Unix seconds
	Origin         int    `json:"origin"`
	ServicerUserID string `json:"servicer_userid,omitempty"` // origin 5 only
	MsgType        string `json:"msgtype"`
	// Raw is the entry exactly as WeCom sent it, for the caller to store.
	Raw json.RawMessage `json:"-"`

	Text         *Text         `json:"text,omitempty"`
	Image        *Media        `json:"image,omitempty"`
	Voice        *Media        `json:"voice,omitempty"`
	Video        *Media        `json:"video,omitempty"`
	File         *Media        `json:"file,omitempty"`
	Location     *Location     `json:"location,omitempty"`
	Link         *Link         `json:"link,omitempty"`
	BusinessCard *BusinessCard `json:"business_card,omitempty"`
	MiniProgram  *MiniProgram  `json:"miniprogram,omitempty"`
	MergedMsg    *MergedMsg    `json:"merged_msg,omitempty"`
	Event        *Event        `json:"event,omitempty"`
}

// Text is a text body. MenuID is set when the customer tapped a click item
// of a menu we sent.
type Text struct {
	Content string `json:"content"`
	MenuID  string `json:"menu_id,omitempty"`
}

// Media is an image, voice, video or file: a media_id for media/get.
type Media struct {
	MediaID string `json:"media_id"`
}

// Location is a shared location.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name"`
	Address   string  `json:"address"`
}

// Link is a shared link.
type Link struct {
	Title  string `json:"title"`
	Desc   string `json:"desc"`
	URL    string `json:"url"`
	PicURL string `json:"pic_url"`
}

// BusinessCard is a shared WeCom contact.
type BusinessCard struct {
	UserID string `json:"userid"`
}

// MiniProgram is a shared mini-program page.
type MiniProgram struct {
	Title        string `json:"title"`
	AppID        string `json:"appid"`
	PagePath     string `json:"pagepath"`
	ThumbMediaID string `json:"thumb_media_id"`
}

// MergedMsg is a forwarded chat record.
type MergedMsg struct {
	Title string       `json:"title"`
	Items []MergedItem `json:"item"`
}

// MergedItem is one message of a chat record; MsgContent is JSON text of
// the body of MsgType.
type MergedItem struct {
	SendTime   int64  `json:"send_time"`
	MsgType    string `json:"msgtype"`
	SenderName string `json:"sender_name"`
	MsgContent string `json:"msg_content"`
}

// Event is the body of msgtype "event". Which fields are set depends on
// EventType (KF.md §4).
type Event struct {
	EventType      string `json:"event_type"`
	OpenKfID       string `json:"open_kfid,omitempty"`
	ExternalUserID string `json:"external_userid,omitempty"`

	// enter_session
	Scene          string          `json:"scene,omitempty"`
	SceneParam     string          `json:"scene_param,omitempty"`
	WelcomeCode    string          `json:"welcome_code,omitempty"`
	WechatChannels *WechatChannels `json:"wechat_channels,omitempty"`

	// msg_send_fail
	FailMsgID string `json:"fail_msgid,omitempty"`
	FailType  int    `json:"fail_type,omitempty"`

	// servicer_status_change, servicer_recall_msg, reject_customer_msg_switch_change
	ServicerUserID string `json:"servicer_userid,omitempty"`
	Status         int    `json:"status,omitempty"`
	StopType       int    `json:"stop_type,omitempty"`
	RejectSwitch   int    `json:"reject_switch,omitempty"`

	// session_status_change
	ChangeType        int    `json:"change_type,omitempty"`
	OldServicerUserID string `json:"old_servicer_userid,omitempty"`
	NewServicerUserID string `json:"new_servicer_userid,omitempty"`
	MsgCode           string `json:"msg_code,omitempty"`

	// user_recall_msg, servicer_recall_msg
	RecallMsgID string `json:"recall_msgid,omitempty"`
}

// WechatChannels tells which WeChat channel the customer came from.
type WechatChannels struct {
	Nickname string `json:"nickname"`
	Scene    int    `json:"scene"`
}

// ParseSyncMsg reads a kf/sync_msg answer. An errcode other than 0 is an
// *Error; an answer that is not the documented JSON object wraps
// ErrMalformed. Entries of msg_list that do not read as a message, or lack
// msgid or msgtype, are dropped and counted in Skipped. Unknown msgtypes and
// event types are kept: they are well-formed messages WeCom added later, to
// be stored and not answered.
func ParseSyncMsg(body []byte) (SyncMsgResponse, error) {
	var p syncMsgPage
	if err := json.Unmarshal(body, &p); err != nil {
		return SyncMsgResponse{}, fmt.Errorf("%w: kf/sync_msg: %v", ErrMalformed, err)
	}
	if p.ErrCode != 0 {
		return SyncMsgResponse{}, &Error{API: "kf/sync_msg", Code: p.ErrCode, Msg: p.ErrMsg}
	}
	if p.HasMore != 0 && p.HasMore != 1 {
		return SyncMsgResponse{}, fmt.Errorf("%w: kf/sync_msg: has_more is %d", ErrMalformed, p.HasMore)
	}
	r := SyncMsgResponse{ErrMsg: p.ErrMsg, NextCursor: p.NextCursor, HasMore: p.HasMore}
	for _, raw := range p.MsgList {
		var m Message
		if err := json.Unmarshal(raw, &m); err != nil || m.MsgID == "" || m.MsgType == "" {
			r.Skipped++
			continue
		}
		m.Raw = raw
		r.MsgList = append(r.MsgList, m)
	}
	return r, nil
}

// Account is the open_kfid the message belongs to, for events too.
func (m Message) Account() string {
	if m.OpenKfID == "" && m.Event != nil {
		return m.Event.OpenKfID
	}
	return m.OpenKfID
}

// Customer is the external_userid of the customer the message is about, for
// events too; "" for events about a receptionist only.
func (m Message) Customer() string {
	if m.ExternalUserID == "" && m.Event != nil {
		return m.Event.ExternalUserID
	}
	return m.ExternalUserID
}

// EventType is the event's type, "" for a message that is no event.
func (m Message) EventType() string {
	if m.MsgType != TypeEvent || m.Event == nil {
		return ""
	}
	return m.Event.EventType
}

// FromCustomer reports whether the customer wrote the message (origin 3, not
// an event): only those are answered. A receptionist's text (origin 5) is
// stored, never answered as if the customer wrote it.
func (m Message) FromCustomer() bool {
	return m.Origin == OriginCustomer && m.MsgType != TypeEvent
}

// Prompt returns the text the model is to answer and whether there is any:
// the trimmed content of a customer's text message. Every other message has
// no prompt: receptionist messages and events are stored only; a customer's
// image, voice (no transcript is given), video, file, location, link, card,
// mini-program, chat record or unknown type is for the caller to answer with
// a fixed note (or not at all), never with the model.
func (m Message) Prompt() (string, bool) {
	if !m.FromCustomer() || m.MsgType != TypeText || m.Text == nil {
		return "", false
	}
	s := strings.TrimSpace(m.Text.Content)
	return s, s != ""
}
