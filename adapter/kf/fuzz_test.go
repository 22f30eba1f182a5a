package kf

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// FuzzParseSyncMsg: ParseSyncMsg never panics; it returns an *Error or
// ErrMalformed, or a page whose every message can be deduped (msgid) and
// read (msgtype, Raw that parses to the same message), with has_more 0 or 1
// and the page's entries either kept or counted in Skipped.
func FuzzParseSyncMsg(f *testing.F) {
	mixed, err := os.ReadFile("testdata/sync_msg_mixed.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mixed)
	for _, s := range []string{
		`{"errcode":0,"errmsg":"ok","next_cursor":"c","has_more":1,"msg_list":[]}`,
		`{"errcode":0,"has_more":0}`,
		`{"errcode":95007,"errmsg":"invalid msg token"}`,
		`{"errcode":0,"msg_list":[null,1,"x",{"msgid":"a"},{"msgid":"b","msgtype":"text","text":{"content":"hi"}}]}`,
		`{"errcode":0,"msg_list":[{"msgid":"a","msgtype":"event","event":{"event_type":"enter_session","welcome_code":"w"}}]}`,
		`{"errcode":0,"msg_list":[{"msgid":"a","msgtype":"location","location":{"latitude":"23.1"}}]}`,
		`{"errcode":0,"has_more":2}`,
		`[]`, ``, `{"errcode":"0"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseSyncMsg(body)
		if err != nil {
			var e *Error
			if !errors.Is(err, ErrMalformed) && (!errors.As(err, &e) || e.Code == 0) {
				t.Fatalf("error %v is neither ErrMalformed nor an *Error with a code", err)
			}
			return
		}
		if r.HasMore != 0 && r.HasMore != 1 {
			t.Fatalf("has_more = %d", r.HasMore)
		}
		var page struct {
			MsgList []json.RawMessage `json:"msg_list"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		if len(r.MsgList)+r.Skipped != len(page.MsgList) {
			t.Fatalf("%d kept + %d skipped != %d entries", len(r.MsgList), r.Skipped, len(page.MsgList))
		}
		for _, m := range r.MsgList {
			if m.MsgID == "" || m.MsgType == "" {
				t.Fatalf("kept a message without msgid or msgtype: %+v", m)
			}
			var again Message
			if err := json.Unmarshal(m.Raw, &again); err != nil || again.MsgID != m.MsgID || again.MsgType != m.MsgType {
				t.Fatalf("Raw %q does not read back as the message: %v", m.Raw, err)
			}
			// The accessors must not panic on whatever bodies came along.
			_, _ = m.Prompt()
			_, _, _ = m.Account(), m.Customer(), m.EventType()
		}
	})
}
