package adapter

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// checkSplit asserts what every split must hold: parts join back to text,
// none is longer than limit or empty (unless text is), and valid UTF-8 gives
// valid parts.
func checkSplit(t *testing.T, text string, limit int, parts []string) {
	t.Helper()
	if len(parts) == 0 {
		t.Fatalf("Split(%d bytes) gave no part", len(text))
	}
	if got := strings.Join(parts, ""); got != text {
		t.Fatalf("parts do not join back to the input (%d bytes, want %d)", len(got), len(text))
	}
	valid := utf8.ValidString(text)
	for i, p := range parts {
		if len(p) > limit {
			t.Errorf("part %d is %d bytes, limit %d", i, len(p), limit)
		}
		if p == "" && text != "" {
			t.Errorf("part %d of %d is empty", i, len(parts))
		}
		if valid && !utf8.ValidString(p) {
			t.Errorf("part %d is not valid UTF-8: it was cut inside a character (ends % x)", i, p[max(0, len(p)-4):])
		}
	}
}

func TestSplit(t *testing.T) {
	para := strings.Repeat("a", 900) + "\n\n"              // a paragraph ends at 902
	line := strings.Repeat("b", 900) + "\n"                // a line ends at 901
	sentenceCN := strings.Repeat("中", 300) + "。"           // ends at 903
	sentenceEN := strings.Repeat("c", 900) + ". "          // ends at 902
	words := strings.Repeat("word ", 180)                  // spaces everywhere, 900 bytes
	noBreak := strings.Repeat("d", 3000)                   // nothing to break at
	emojiAt := strings.Repeat("e", 2046) + "😀" + "tail"    // the emoji straddles byte 2048
	emojiFits := strings.Repeat("f", 2044) + "😀" + "tail"  // the emoji ends at 2048
	stub := strings.Repeat("g", 100) + "\n\n" + sentenceCN // a break in the first quarter
	tests := []struct {
		name  string
		text  string
		limit int
		want  []int // lengths of the parts; nil: only the invariants
	}{
		{"empty", "", 2048, []int{0}},
		{"short", "你好，世界", 2048, []int{15}},
		{"exactly the limit", strings.Repeat("x", 2048), 2048, []int{2048}},
		{"one byte over", strings.Repeat("x", 2049), 2048, []int{2048, 1}},
		{"exactly the limit in Chinese", strings.Repeat("汉", 682) + "xx", 2048, []int{2048}},
		{"Chinese without punctuation", strings.Repeat("汉", 2000), 2048, []int{2046, 2046, 1908}},
		{"paragraph before sentence and space", para + sentenceCN + sentenceEN + words, 2048, []int{902, 1805, 900}},
		{"line before sentence and space", line + sentenceCN + words + noBreak[:500], 2048, []int{901, 903, 1400}},
		{"Chinese sentence before space", words + sentenceCN + words + noBreak[:500], 2048, []int{1803, 1400}},
		{"Western sentence before space", words + sentenceEN + words + noBreak[:500], 2048, []int{1802, 1400}},
		{"the last sentence end wins", sentenceCN + sentenceEN + sentenceCN + noBreak[:500], 2048, []int{1805, 1403}},
		{"space when nothing else", words + noBreak[:1500], 2048, []int{900, 1500}},
		{"no break at all", noBreak, 2048, []int{2048, 952}},
		{"a break in the first quarter leaves no stub", stub + noBreak[:1500], 2048, []int{1005, 1500}},
		{"4-byte emoji across the limit", emojiAt, 2048, []int{2046, 8}},
		{"4-byte emoji ending at the limit", emojiFits, 2048, []int{2048, 4}},
		{"emoji only", strings.Repeat("😀", 1000), 2048, []int{2048, 1952}},
		{"a limit below a character is raised", "😀😀ab", 1, []int{4, 4, 2}},
		{"small limit", "ab cd ef", 4, []int{3, 3, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts := Split(tt.text, tt.limit)
			limit := max(tt.limit, utf8.UTFMax)
			checkSplit(t, tt.text, limit, parts)
			if tt.want == nil {
				return
			}
			got := make([]int, len(parts))
			for i, p := range parts {
				got[i] = len(p)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("part lengths %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitInvalidUTF8(t *testing.T) {
	tests := map[string]string{
		"continuation bytes only": strings.Repeat("\x80", 5000),
		"lead bytes only":         strings.Repeat("\xe4", 5000),
		"0xff":                    strings.Repeat("\xff", 5000),
		"truncated characters":    strings.Repeat("中"[:2], 3000),
		"valid then garbage":      strings.Repeat("中", 600) + strings.Repeat("\xbf", 3000),
	}
	for name, text := range tests {
		t.Run(name, func(t *testing.T) {
			done := make(chan []string, 1)
			go func() { done <- Split(text, 2048) }()
			select {
			case parts := <-done:
				checkSplit(t, text, 2048, parts)
			case <-time.After(5 * time.Second):
				t.Fatal("Split does not return on invalid UTF-8")
			}
		})
	}
}

// FuzzSplit checks the invariants on any input and any limit from a
// character (4 bytes) to WeCom's 2048; seeds in testdata/fuzz/FuzzSplit.
func FuzzSplit(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string, limit uint16) {
		lim := utf8.UTFMax + int(limit)%(maxPartBytes-utf8.UTFMax+1)
		parts := Split(text, lim)
		checkSplit(t, text, lim, parts)
		if text == "" && (len(parts) != 1 || parts[0] != "") {
			t.Errorf("Split(\"\") = %q, want one empty part", parts)
		}
	})
}
