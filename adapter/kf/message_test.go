package kf

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

const (
	account  = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
	customer = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"
)

// TestParseSyncMsgMixedPage reads a page with a customer text (with
// menu_id), a receptionist text, enter_session, msg_send_fail, a customer
// image, a recall, a hand-over and a location: only the first has a prompt
// (KF.md §14.9, §14.15).
func TestParseSyncMsgMixedPage(t *testing.T) {
	body, err := os.ReadFile("testdata/sync_msg_mixed.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseSyncMsg(body)
	if err != nil {
		t.Fatal(err)
	}
	if !r.More() || r.NextCursor != "4gw7MepFLfgF2VC5npN" || r.Skipped != 0 || len(r.MsgList) != 8 {
		t.Fatalf("page: more %v cursor %q skipped %d messages %d", r.More(), r.NextCursor, r.Skipped, len(r.MsgList))
	}
	type row struct {
		origin    int
		msgType   string
		eventType string
		prompt    string
		customer  bool
	}
	want := []row{
		{OriginCustomer, TypeText, "", "你好", true},
		{OriginReceptionist, TypeText, "", "", false},
		{OriginSystem, TypeEvent, EventEnterSession, "", false},
		{OriginSystem, TypeEvent, EventMsgSendFail, "", false},
		{OriginCustomer, TypeImage, "", "", true},
		{OriginSystem, TypeEvent, EventUserRecallMsg, "", false},
		{OriginSystem, TypeEvent, EventSessionStatusChange, "", false},
		{OriginCustomer, TypeLocation, "", "", true},
	}
	for i, m := range r.MsgList {
		p, ok := m.Prompt()
		got := row{m.Origin, m.MsgType, m.EventType(), p, m.FromCustomer()}
		if got != want[i] {
			t.Errorf("message %d: %+v, want %+v", i, got, want[i])
		}
		if ok != (p != "") {
			t.Errorf("message %d: Prompt = %q, %v", i, p, ok)
		}
		if m.Account() != account || m.Customer() != customer {
			t.Errorf("message %d: Account %q Customer %q", i, m.Account(), m.Customer())
		}
		if len(m.Raw) == 0 || m.Raw[0] != '{' {
			t.Errorf("message %d: Raw = %q", i, m.Raw)
		}
	}
	if got := r.MsgList[0].Text.MenuID; got != "101" {
		t.Errorf("menu_id = %q, want 101", got)
	}
	if got := r.MsgList[1].ServicerUserID; got != "zhangsan" {
		t.Errorf("servicer_userid = %q", got)
	}
	enter := r.MsgList[2].Event
	if enter.WelcomeCode != "aaaaaa" || enter.Scene != "12345" || enter.SceneParam != "abc" ||
		enter.WechatChannels == nil || enter.WechatChannels.Nickname != "视频号名称" {
		t.Errorf("enter_session = %+v", enter)
	}
	if ev := r.MsgList[3].Event; ev.FailMsgID != "wbAAAA" || ev.FailType != FailRefused {
		t.Errorf("msg_send_fail = %+v", ev)
	}
	if got := r.MsgList[4].Image; got == nil || got.MediaID == "" {
		t.Errorf("image = %+v", got)
	}
	if got := r.MsgList[5].Event.RecallMsgID; got != r.MsgList[0].MsgID {
		t.Errorf("recall_msgid = %q", got)
	}
	if ev := r.MsgList[6].Event; ev.ChangeType != ChangeFromPool || ev.NewServicerUserID != "zhangsan" || ev.MsgCode != "MSG_CODE" {
		t.Errorf("session_status_change = %+v", ev)
	}
	if loc := r.MsgList[7].Location; loc == nil || loc.Name == "" || loc.Latitude < 23 {
		t.Errorf("location = %+v", loc)
	}
}

// TestSyncMsgPaging: has_more=1 with an empty msg_list still means more, and
// an empty next_cursor keeps the stored cursor (KF.md §14.3).
func TestSyncMsgPaging(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		more       bool
		stored     string
		wantCursor string
	}{
		{"empty page with more", `{"errcode":0,"errmsg":"ok","next_cursor":"c2","has_more":1,"msg_list":[]}`, true, "c1", "c2"},
		{"no msg_list at all", `{"errcode":0,"errmsg":"ok","next_cursor":"c2","has_more":1}`, true, "c1", "c2"},
		{"last page", `{"errcode":0,"errmsg":"ok","next_cursor":"c3","has_more":0,"msg_list":[]}`, false, "c2", "c3"},
		{"empty next_cursor keeps the stored one", `{"errcode":0,"errmsg":"ok","next_cursor":"","has_more":0,"msg_list":[]}`, false, "c2", "c2"},
		{"missing next_cursor keeps the stored one", `{"errcode":0,"errmsg":"ok","has_more":0}`, false, "c2", "c2"},
		{"first pull without cursor", `{"errcode":0,"errmsg":"ok","has_more":0}`, false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseSyncMsg([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.More() != tt.more {
				t.Errorf("More = %v, want %v", r.More(), tt.more)
			}
			if got := r.Cursor(tt.stored); got != tt.wantCursor {
				t.Errorf("Cursor(%q) = %q, want %q", tt.stored, got, tt.wantCursor)
			}
		})
	}
}

func TestParseSyncMsgRefusals(t *testing.T) {
	tests := []struct {
		name string
		body string
		code int // 0: ErrMalformed
	}{
		{"not json", `<xml/>`, 0},
		{"array", `[]`, 0},
		{"has_more string", `{"errcode":0,"has_more":"1"}`, 0},
		{"has_more 2", `{"errcode":0,"has_more":2}`, 0},
		{"msg_list object", `{"errcode":0,"msg_list":{}}`, 0},
		{"expired msg token", `{"errcode":95007,"errmsg":"invalid msg token"}`, CodeInvalidMsgToken},
		{"token expired", `{"errcode":42001,"errmsg":"access_token expired"}`, CodeTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSyncMsg([]byte(tt.body))
			var e *Error
			switch {
			case tt.code == 0 && !errors.Is(err, ErrMalformed):
				t.Fatalf("err = %v, want ErrMalformed", err)
			case tt.code != 0 && (!errors.As(err, &e) || e.Code != tt.code || e.API != "kf/sync_msg"):
				t.Fatalf("err = %v, want errcode %d", err, tt.code)
			}
		})
	}
}

// TestParseSyncMsgSkipsBadEntries: an entry that cannot be deduped or read
// costs that entry, not the page, so the cursor still moves on.
func TestParseSyncMsgSkipsBadEntries(t *testing.T) {
	body := `{"errcode":0,"next_cursor":"c","has_more":0,"msg_list":[
		{"msgid":"a","msgtype":"text","origin":3,"text":{"content":"hi"}},
		{"msgtype":"text","origin":3,"text":{"content":"no msgid"}},
		{"msgid":"b","origin":3},
		{"msgid":"c","msgtype":"text","origin":"3"},
		null, 7, "x",
		{"msgid":"d","msgtype":"channels_shop_order","origin":3,"channels_shop_order":{"order_id":"1"}},
		{"msgid":"e","msgtype":"event","origin":4,"event":{"event_type":"something_new"}}
	]}`
	r, err := ParseSyncMsg([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range r.MsgList {
		ids = append(ids, m.MsgID)
	}
	if !reflect.DeepEqual(ids, []string{"a", "d", "e"}) || r.Skipped != 6 {
		t.Fatalf("kept %v, skipped %d; want [a d e], 6", ids, r.Skipped)
	}
	if _, ok := r.MsgList[1].Prompt(); ok {
		t.Error("an unknown customer msgtype has a prompt")
	}
	if got := r.MsgList[2].EventType(); got != "something_new" {
		t.Errorf("EventType = %q", got)
	}
}

func TestPrompt(t *testing.T) {
	text := func(origin int, content string) Message {
		return Message{MsgID: "m", Origin: origin, MsgType: TypeText, Text: &Text{Content: content}}
	}
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"customer text", text(OriginCustomer, "  你好  \n"), "你好"},
		{"blank text", text(OriginCustomer, " \n\t"), ""},
		{"receptionist text", text(OriginReceptionist, "我来处理"), ""},
		{"system origin text", text(OriginSystem, "x"), ""},
		{"text without body", Message{MsgID: "m", Origin: OriginCustomer, MsgType: TypeText}, ""},
		{"voice", Message{MsgID: "m", Origin: OriginCustomer, MsgType: TypeVoice, Voice: &Media{MediaID: "v"}}, ""},
		{"event", Message{MsgID: "m", Origin: OriginCustomer, MsgType: TypeEvent, Event: &Event{EventType: EventEnterSession}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.m.Prompt()
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("Prompt = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}
