package aibot

import (
	"strings"
	"testing"
)

func TestReplyMarshal(t *testing.T) {
	tests := []struct {
		name  string
		reply Reply
		want  string
	}{
		{"first stream reply with feedback", PassiveStream("s-1", "", false, "fb-1"),
			`{"msgtype":"stream","stream":{"id":"s-1","finish":false,"content":"","feedback":{"id":"fb-1"}}}`},
		{"later stream reply", PassiveStream("s-1", "**广州** <think>…</think> a&b", false, ""),
			`{"msgtype":"stream","stream":{"id":"s-1","finish":false,"content":"**广州** <think>…</think> a&b"}}`},
		{"finished", PassiveStream("s-1", "全部", true, ""),
			`{"msgtype":"stream","stream":{"id":"s-1","finish":true,"content":"全部"}}`},
		{"welcome", PassiveText("hello\nI'm RobotA\n"), `{"msgtype":"text","text":{"content":"hello\nI'm RobotA\n"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.reply.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestReplyMarshalRefuses(t *testing.T) {
	for name, r := range map[string]Reply{
		"empty":          {},
		"no stream id":   PassiveStream("", "x", false, ""),
		"content limit":  PassiveStream("s", strings.Repeat("a", MaxStreamBytes+1), false, ""),
		"feedback limit": PassiveStream("s", "x", false, strings.Repeat("f", MaxFeedbackIDBytes+1)),
	} {
		if b, err := r.Marshal(); err == nil {
			t.Errorf("%s: Marshal = %s, want an error", name, b)
		}
	}
	if _, err := PassiveStream("s", strings.Repeat("a", MaxStreamBytes), true, strings.Repeat("f", MaxFeedbackIDBytes)).Marshal(); err != nil {
		t.Errorf("at the limits: %v", err)
	}
}

func TestReplyIsEmpty(t *testing.T) {
	if !(Reply{}).IsEmpty() || PassiveText("hi").IsEmpty() || PassiveStream("s", "", true, "").IsEmpty() {
		t.Error("IsEmpty")
	}
	// Edge case 11: an unset welcome answers enter_chat with the empty reply.
	if !PassiveText("").IsEmpty() || !PassiveText(" \n").IsEmpty() {
		t.Error("IsEmpty")
	}
}
