package aibot

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"
)

func TestCommandFrames(t *testing.T) {
	tests := []struct {
		name  string
		cmd   string
		reqID string
		body  any
		want  string
	}{
		{"subscribe", CmdSubscribe, "r1", SubscribeBody{BotID: "aibX", Secret: "S"},
			`{"cmd":"aibot_subscribe","headers":{"req_id":"r1"},"body":{"bot_id":"aibX","secret":"S"}}`},
		{"ping has no body", CmdPing, "p1", nil,
			`{"cmd":"ping","headers":{"req_id":"p1"}}`},
		{"first stream frame carries the feedback id", CmdRespondMsg, "cb1", StreamReply("s1", "he", false, "fb1"),
			`{"cmd":"aibot_respond_msg","headers":{"req_id":"cb1"},"body":{"msgtype":"stream","stream":{"id":"s1","finish":false,"content":"he","feedback":{"id":"fb1"}}}}`},
		{"later stream frames do not", CmdRespondMsg, "cb1", StreamReply("s1", "hello", true, ""),
			`{"cmd":"aibot_respond_msg","headers":{"req_id":"cb1"},"body":{"msgtype":"stream","stream":{"id":"s1","finish":true,"content":"hello"}}}`},
		{"markdown reply", CmdRespondMsg, "cb1", MarkdownReply("**hi**"),
			`{"cmd":"aibot_respond_msg","headers":{"req_id":"cb1"},"body":{"msgtype":"markdown","markdown":{"content":"**hi**"}}}`},
		{"welcome", CmdRespondWelcome, "ev1", WelcomeMsg{MsgType: "text", Text: Text{Content: "hello"}},
			`{"cmd":"aibot_respond_welcome_msg","headers":{"req_id":"ev1"},"body":{"msgtype":"text","text":{"content":"hello"}}}`},
		{"send", CmdSendMsg, "s1", MarkdownSend("zhangsan", "rest"),
			`{"cmd":"aibot_send_msg","headers":{"req_id":"s1"},"body":{"chatid":"zhangsan","msgtype":"markdown","markdown":{"content":"rest"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := command(tt.cmd, tt.reqID, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// The inbound shapes, as WeCom sends them: an ack has no cmd (AIBOT.md
// §3.1, observed); a callback keeps its body raw for the parser.
func TestInboundFrames(t *testing.T) {
	var ack Frame
	if err := json.Unmarshal([]byte(`{"errcode":0,"errmsg":"ok","headers":{"req_id":"aibot_subscribe_1774529981774"}}`), &ack); err != nil {
		t.Fatal(err)
	}
	if !ack.IsAck() || *ack.ErrCode != 0 || ack.Headers.ReqID != "aibot_subscribe_1774529981774" {
		t.Fatalf("ack decoded as %+v", ack)
	}
	var cb Frame
	body := `{"msgid":"08f2b98a","aibotid":"aibcf7gdd","chattype":"single","from":{"userid":"U"},"msgtype":"text","text":{"content":"hi"}}`
	if err := json.Unmarshal([]byte(`{"cmd":"aibot_msg_callback","headers":{"req_id":"R"},"body":`+body+`}`), &cb); err != nil {
		t.Fatal(err)
	}
	if cb.IsAck() || cb.Cmd != CmdMsgCallback || cb.Headers.ReqID != "R" || string(cb.Body) != body {
		t.Fatalf("callback decoded as %+v", cb)
	}
}

func TestNewReqIDLooksLikeTheSDKs(t *testing.T) {
	now := time.UnixMilli(1774529981774)
	a, b := NewReqID("ping", now), NewReqID("ping", now)
	if !regexp.MustCompile(`^ping_1774529981774_[0-9a-f]{8}$`).MatchString(a) {
		t.Fatalf("req_id %q", a)
	}
	if a == b {
		t.Fatalf("two req_ids in one millisecond are equal: %q", a)
	}
}

// What WeCom sends is decoded by encoding/json into Frame; the fuzz target
// checks that no input makes the read path's own code (IsAck, eventType)
// panic, and that a decoded frame survives a round trip.
func FuzzFrame(f *testing.F) {
	f.Add([]byte(`{"errcode":0,"errmsg":"ok","headers":{"req_id":"aibot_subscribe_1774529981774"}}`))
	f.Add([]byte(`{"cmd":"aibot_event_callback","headers":{"req_id":"R"},"body":{"msgtype":"event","event":{"eventtype":"disconnected_event"}}}`))
	f.Add([]byte(`{"cmd":"aibot_msg_callback","headers":{"req_id":"R"},"body":{"msgid":"m","msgtype":"text","text":{"content":"hi"}}}`))
	f.Add([]byte(`{"cmd":"aibot_event_callback","body":[1,2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr Frame
		if json.Unmarshal(data, &fr) != nil {
			return
		}
		_ = fr.IsAck()
		_ = eventType(fr.Body)
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("decoded frame does not marshal: %v", err)
		}
		var again Frame
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if again.Cmd != fr.Cmd || again.Headers != fr.Headers || again.IsAck() != fr.IsAck() {
			t.Fatalf("round trip changed %+v into %+v", fr, again)
		}
	})
}
