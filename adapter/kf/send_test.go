package kf

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var msgIDPattern = regexp.MustCompile(`^[0-9a-zA-Z_-]{1,32}$`)

// TestOutboundMsgID: at most 32 bytes of [0-9a-zA-Z_-], never "", stable
// across calls (a retry carries the same msgid), different per part and per
// message, and never the inbound msgid itself (KF.md §14.14).
func TestOutboundMsgID(t *testing.T) {
	inbound := []string{
		"from_msgid_4622416642169452483",
		"4XYm59AKqyxTqvcVJ7u4i3eeo2LK2iLae3rgiu83xNf9", // 44 characters, as [EW] saw
		"", "中文 id with spaces/and+slashes=", strings.Repeat("x", 1000),
	}
	seen := map[string]string{}
	for _, in := range inbound {
		for part := range MaxParts + 2 {
			id := OutboundMsgID(in, part)
			if !msgIDPattern.MatchString(id) || len(id) > MaxMsgIDBytes {
				t.Fatalf("OutboundMsgID(%q, %d) = %q: not ≤32 bytes of [0-9a-zA-Z_-]", in, part, id)
			}
			if id == in {
				t.Fatalf("OutboundMsgID(%q, %d) reuses the inbound msgid", in, part)
			}
			if again := OutboundMsgID(in, part); again != id {
				t.Fatalf("OutboundMsgID(%q, %d) not stable: %q then %q", in, part, id, again)
			}
			key := in + "#" + string(rune('0'+part))
			if prev, dup := seen[id]; dup {
				t.Fatalf("OutboundMsgID collides for %q and %q", prev, key)
			}
			seen[id] = key
		}
	}
	// "a"+part 11 and "a1"+part 1 must differ: the separator keeps them apart.
	if OutboundMsgID("a", 11) == OutboundMsgID("a1", 1) {
		t.Error("id and part run together")
	}
}

func TestSendRequestJSON(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"send_msg without msgid", TextMessage(account, customer, "", "你好"),
			`{"touser":"` + customer + `","open_kfid":"` + account + `","msgtype":"text","text":{"content":"你好"}}`},
		{"send_msg with msgid", TextMessage(account, customer, "wb1", "hi"),
			`{"touser":"` + customer + `","open_kfid":"` + account + `","msgid":"wb1","msgtype":"text","text":{"content":"hi"}}`},
		{"send_msg_on_event without msgid", EventText("CODE", "", "欢迎"),
			`{"code":"CODE","msgtype":"text","text":{"content":"欢迎"}}`},
		{"sync_msg minimal", SyncMsgRequest{OpenKfID: account},
			`{"open_kfid":"` + account + `"}`},
		{"sync_msg full", SyncMsgRequest{Cursor: "c", Token: "ENC", Limit: 1000, OpenKfID: account},
			`{"cursor":"c","token":"ENC","limit":1000,"open_kfid":"` + account + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON =\n%s\nwant\n%s", b, tt.want)
			}
		})
	}
}

// chunks is a splitter like the service's: it prefers to end parts after
// "。", else at the last character boundary.
func chunks(text string, limit int) []string {
	var out []string
	for len(text) > limit {
		head := cutRunes(text, limit)[0]
		if i := strings.LastIndex(head, "。"); i > len(head)/2 {
			head = head[:i+len("。")]
		}
		out = append(out, head)
		text = text[len(head):]
	}
	return append(out, text)
}

func checkParts(t *testing.T, parts []string) {
	t.Helper()
	if len(parts) == 0 || len(parts) > MaxParts {
		t.Fatalf("%d parts, want 1..%d", len(parts), MaxParts)
	}
	for i, p := range parts {
		if len(p) > MaxTextBytes || !utf8.ValidString(p) || strings.TrimSpace(p) == "" {
			t.Fatalf("part %d: %d bytes, valid UTF-8 %v, %q…", i, len(p), utf8.ValidString(p), p[:min(len(p), 40)])
		}
	}
}

// TestBudget3KBChinese: a 3 KB Chinese answer becomes two parts of at most
// 2048 bytes, cut on a character boundary, losing nothing (KF.md §14.11).
func TestBudget3KBChinese(t *testing.T) {
	answer := strings.Repeat("企业微信客服", 171) // 3078 bytes, no punctuation
	for _, split := range []Splitter{nil, chunks} {
		parts := Budget(answer, "（回复继续）", split)
		checkParts(t, parts)
		if len(parts) != 2 || strings.Join(parts, "") != answer {
			t.Fatalf("%d parts of %d bytes, or text lost", len(parts), len(answer))
		}
	}
}

// TestBudgetLongAnswer: an answer of more than 5 × 2048 bytes keeps 4 full
// parts, and the 5th ends at a sentence end followed by the note.
func TestBudgetLongAnswer(t *testing.T) {
	sentence := "这是一个很长的回答中的一句话，用来测试分段。"    // 66 bytes
	answer := strings.Repeat(sentence, 400) // 26400 bytes
	const note = "（内容较长，回复“继续”查看剩余部分）"
	for name, split := range map[string]Splitter{"default": nil, "sentences": chunks} {
		t.Run(name, func(t *testing.T) {
			parts := Budget(answer, note, split)
			checkParts(t, parts)
			if len(parts) != MaxParts {
				t.Fatalf("%d parts, want %d", len(parts), MaxParts)
			}
			fifth := parts[MaxParts-1]
			if !strings.HasSuffix(fifth, "。\n"+note) {
				t.Errorf("5th part does not end at a sentence end + note: …%q", fifth[max(0, len(fifth)-80):])
			}
			if len(fifth) < MaxTextBytes/2 {
				t.Errorf("5th part has only %d bytes", len(fifth))
			}
			if !strings.HasPrefix(answer, strings.Join(parts[:MaxParts-1], "")+strings.TrimSuffix(fifth, "\n"+note)) {
				t.Error("parts are not the start of the answer")
			}
		})
	}
}

func TestBudgetEdges(t *testing.T) {
	if got := Budget("", "note", nil); len(got) != 0 {
		t.Errorf("empty answer: %q", got)
	}
	if got := Budget("  \n", "note", nil); len(got) != 0 {
		t.Errorf("blank answer: %q", got)
	}
	if got := Budget("短回答", "note", nil); len(got) != 1 || got[0] != "短回答" {
		t.Errorf("short answer: %q", got)
	}
	// Many short parts from the splitter: the rest fits in the 5th, no note.
	lines := func(text string, limit int) []string { return strings.SplitAfter(text, "\n") }
	answer := strings.Repeat("第一行\n", 20)
	got := Budget(answer, "note", lines)
	checkParts(t, got)
	if strings.Join(got, "") != answer || strings.Contains(got[MaxParts-1], "note") {
		t.Errorf("short lines: %q", got)
	}
	// Without a note the 5th part just ends at the sentence end.
	long := strings.Repeat("一句话。", 1000)
	got = Budget(long, "", nil)
	checkParts(t, got)
	if !strings.HasSuffix(got[MaxParts-1], "。") {
		t.Errorf("no note: 5th ends …%q", got[MaxParts-1][len(got[MaxParts-1])-12:])
	}
	// A note longer than a part is cut, never sent over the limit.
	got = Budget(strings.Repeat("字", 5000), strings.Repeat("注", 1000), nil)
	checkParts(t, got)
	// A splitter that ignores the limit is corrected.
	whole := func(text string, limit int) []string { return []string{text} }
	got = Budget(strings.Repeat("好", 1500), "", whole)
	checkParts(t, got)
	if len(got) != 3 {
		t.Errorf("oversized part cut into %d", len(got))
	}
}
