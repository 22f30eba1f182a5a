package aibot

import "unicode/utf8"

// MaxStreamBytes is WeCom's limit on a stream's content and on a
// response_url markdown, in UTF-8 bytes.
const MaxStreamBytes = 20480

// Cut splits s into a head of at most max bytes and the rest, never inside a
// UTF-8 sequence: the head ends at the last character boundary that fits, so
// head+rest == s. A character made of several runes (an emoji with a skin
// tone, a ZWJ family) can be split between its runes, which WeCom shows as
// the two halves. Bytes that are not UTF-8 are cut like single characters.
// A max below 1 gives an empty head.
func Cut(s string, max int) (head, rest string) {
	if len(s) <= max {
		return s, ""
	}
	if max <= 0 {
		return "", s
	}
	// s[cut] is the first byte of the rest: step back over continuation
	// bytes, at most UTFMax-1 of them (a longer run is not UTF-8).
	cut := max
	for i := 1; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	if !utf8.RuneStart(s[cut]) {
		cut = max
	}
	return s[:cut], s[cut:]
}
