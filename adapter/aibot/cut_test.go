package aibot

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Edge case 8: a 30 KB Chinese answer, and emoji at the cut.
func TestCut(t *testing.T) {
	chinese := strings.Repeat("企业微信智能机器人流式回复。", 720) // 3 bytes a character
	if len(chinese) < 30000 {
		t.Fatalf("sample is %d bytes", len(chinese))
	}
	emojiAt := func(off int) string { return strings.Repeat("a", off) + "😀" + "tail" }
	tests := []struct {
		name     string
		s        string
		max      int
		headLen  int
		wantRest bool
	}{
		{"30 KB Chinese", chinese, MaxStreamBytes, MaxStreamBytes - MaxStreamBytes%3, true},
		{"fits", "你好", 6, 6, false},
		{"short", "hi", MaxStreamBytes, 2, false},
		{"emoji starts at the cut", emojiAt(10), 10, 10, true},
		{"emoji 1 byte in", emojiAt(9), 10, 9, true},
		{"emoji 2 bytes in", emojiAt(8), 10, 8, true},
		{"emoji 3 bytes in", emojiAt(7), 10, 7, true},
		{"emoji ends at the cut", emojiAt(6), 10, 10, true},
		{"max 0", "abc", 0, 0, true},
		{"negative max", "abc", -1, 0, true},
		{"max inside the first rune", "😀", 2, 0, true},
		{"empty", "", 10, 0, false},
		{"invalid bytes", "ab\x80\x80\x80\x80\x80cd", 4, 4, true},
		{"skin tone is two runes", "👍🏽", 4, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, rest := Cut(tt.s, tt.max)
			if head+rest != tt.s {
				t.Fatal("head+rest is not s")
			}
			if len(head) != tt.headLen || (rest != "") != tt.wantRest {
				t.Fatalf("head %d bytes, rest %d bytes; want head %d, rest %v", len(head), len(rest), tt.headLen, tt.wantRest)
			}
			if utf8.ValidString(tt.s) && (!utf8.ValidString(head) || !utf8.ValidString(rest)) {
				t.Fatalf("cut inside a character: %q | %q", head[max(0, len(head)-4):], rest[:min(4, len(rest))])
			}
		})
	}
}

// Cutting again and again consumes a long answer in valid pieces, each within
// the limit, with nothing lost.
func TestCutRepeatedly(t *testing.T) {
	s := strings.Repeat("答案😀ok。", 5000)
	var parts []string
	for rest := s; rest != ""; {
		var head string
		head, rest = Cut(rest, MaxStreamBytes)
		if head == "" || len(head) > MaxStreamBytes || !utf8.ValidString(head) {
			t.Fatalf("part %d: %d bytes, valid %v", len(parts), len(head), utf8.ValidString(head))
		}
		parts = append(parts, head)
	}
	if strings.Join(parts, "") != s {
		t.Fatal("parts do not join to the answer")
	}
}

func FuzzCut(f *testing.F) {
	f.Add("企业微信😀", 4)
	f.Add("ab\x80\x80\x80\x80cd", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		head, rest := Cut(s, n)
		if head+rest != s {
			t.Fatal("head+rest != s")
		}
		if len(head) > max(n, 0) {
			t.Fatalf("head of %d bytes for max %d", len(head), n)
		}
		if utf8.ValidString(s) && !utf8.ValidString(head) {
			t.Fatal("cut inside a character")
		}
		if n >= utf8.UTFMax && len(s) > n && len(head) <= n-utf8.UTFMax {
			t.Fatalf("head of %d bytes wastes room (max %d)", len(head), n)
		}
	})
}
