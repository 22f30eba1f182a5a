package wecomsim

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/work/message"
)

func TestSendRefusals(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	withAgent := func(v any) map[string]any {
		m := text("zhangsan", "hi")
		m["agentid"] = v
		return m
	}
	tests := []struct {
		name  string
		token string
		body  any
		want  int
	}{
		{"missing token", "", text("zhangsan", "hi"), 41001},
		{"unknown token", "not-a-token", text("zhangsan", "hi"), 40014},
		{"bad json", tok, `{"touser":`, 40058},
		{"missing agentid", tok, map[string]any{"touser": "zhangsan", "msgtype": "text", "text": map[string]any{"content": "hi"}}, 41011},
		{"agentid not numeric", tok, withAgent("abc"), 40056},
		{"other app's agentid", tok, withAgent(1000003), 301002},
		{"empty touser", tok, text("", "hi"), 81013},
		{"empty content", tok, text("zhangsan", ""), 44004},
		{"content over 2048 bytes", tok, text("zhangsan", strings.Repeat("好", 683)), 45002},
		{"unsupported msgtype", tok, map[string]any{"touser": "zhangsan", "msgtype": "telepathy", "agentid": agentID}, 40008},
		{"image without media_id", tok, map[string]any{"touser": "zhangsan", "msgtype": "image", "agentid": agentID}, 40007},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res := f.send(t, tt.token, tt.body); res.ErrCode != tt.want {
				t.Fatalf("errcode = %d (%s), want %d", res.ErrCode, res.ErrMsg, tt.want)
			}
		})
	}
	if got := f.do(t, http.MethodGet, "/cgi-bin/message/send?access_token="+tok, ""); got.ErrCode != 43003 {
		t.Errorf("GET send: errcode %d, want 43003", got.ErrCode)
	}
	if n := len(f.sim.Delivered()); n != 0 {
		t.Errorf("%d refused messages were delivered", n)
	}
	if got := f.sim.Rejected(); got[40014] != 1 || got[45002] != 1 || got[43003] != 1 {
		t.Errorf("Rejected = %v", got)
	}
	if n := f.sim.SendCalls(); n != len(tests)+1 {
		t.Errorf("SendCalls = %d, want %d", n, len(tests)+1)
	}
}

func TestSendDelivers(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)

	// Exactly 2048 bytes is allowed.
	max := strings.Repeat("好", 682) + "ab"
	if res := f.send(t, tok, text("zhangsan", max)); res.ErrCode != 0 || res.MsgID == "" {
		t.Fatalf("2048 bytes: %+v", res)
	}

	// silenceper's request type sends agentid as a string.
	req := message.SendTextRequest{
		SendRequestCommon: &message.SendRequestCommon{ToUser: "lisi", MsgType: "text", AgentID: "1000002"},
		Text:              message.TextField{Content: "你好"},
	}
	f.clock.Advance(time.Minute)
	if res := f.send(t, tok, req); res.ErrCode != 0 {
		t.Fatalf("silenceper body: %+v", res)
	}
	md := map[string]any{"touser": "wangwu", "msgtype": "markdown", "agentid": "1000002",
		"markdown": map[string]any{"content": "**bold**"}}
	if res := f.send(t, tok, md); res.ErrCode != 0 {
		t.Fatalf("markdown: %+v", res)
	}

	got := f.sim.Delivered()
	if len(got) != 3 {
		t.Fatalf("delivered %d, want 3", len(got))
	}
	want := []Sent{
		{ToUser: "zhangsan", AgentID: agentID, MsgType: "text", Content: max, At: newClock().Now()},
		{ToUser: "lisi", AgentID: agentID, MsgType: "text", Content: "你好", At: newClock().Now().Add(time.Minute)},
		{ToUser: "wangwu", AgentID: agentID, MsgType: "markdown", Content: "**bold**", At: newClock().Now().Add(time.Minute)},
	}
	ids := map[string]bool{}
	for i, g := range got {
		ids[g.MsgID] = true
		g.MsgID = ""
		if g != want[i] {
			t.Errorf("delivered[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	if len(ids) != 3 {
		t.Error("message IDs are not unique")
	}
}

func TestDuplicateCheck(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	dup := func(to, content string, interval int) map[string]any {
		m := text(to, content)
		m["enable_duplicate_check"] = 1
		if interval > 0 {
			m["duplicate_check_interval"] = interval
		}
		return m
	}
	mustOK := func(body any) {
		t.Helper()
		if res := f.send(t, tok, body); res.ErrCode != 0 || res.MsgID == "" {
			t.Fatalf("%+v", res)
		}
	}

	mustOK(dup("zhangsan", "part 1", 0))
	mustOK(dup("zhangsan", "part 1", 0)) // a retry: answered ok, not shown
	mustOK(dup("lisi", "part 1", 0))     // another user
	mustOK(dup("zhangsan", "part 2", 0)) // other content
	mustOK(text("zhangsan", "part 2"))   // no duplicate check asked: shown again
	f.clock.Advance(1799 * time.Second)
	mustOK(dup("zhangsan", "part 1", 0)) // still within the default 1800s
	f.clock.Advance(time.Second)
	mustOK(dup("zhangsan", "part 1", 0)) // the window ran from the delivery, not the drops

	mustOK(dup("wangwu", "short", 60))
	f.clock.Advance(59 * time.Second)
	mustOK(dup("wangwu", "short", 60))
	f.clock.Advance(time.Second)
	mustOK(dup("wangwu", "short", 60))

	var delivered, dropped []string
	for _, s := range f.sim.Delivered() {
		delivered = append(delivered, s.ToUser+":"+s.Content)
	}
	for _, s := range f.sim.Dropped() {
		if !s.DuplicateCheck {
			t.Errorf("dropped message without duplicate check: %+v", s)
		}
		dropped = append(dropped, s.ToUser+":"+s.Content)
	}
	wantDelivered := "zhangsan:part 1,lisi:part 1,zhangsan:part 2,zhangsan:part 2,zhangsan:part 1,wangwu:short,wangwu:short"
	wantDropped := "zhangsan:part 1,zhangsan:part 1,wangwu:short"
	if got := strings.Join(delivered, ","); got != wantDelivered {
		t.Errorf("delivered %s\nwant      %s", got, wantDelivered)
	}
	if got := strings.Join(dropped, ","); got != wantDropped {
		t.Errorf("dropped %s\nwant    %s", got, wantDropped)
	}
}
