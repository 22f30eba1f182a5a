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
	// s[max] is the first byte of the rest. Step back over continuation
	// bytes to the start of the character that crosses max; a multi-byte
	// character starts at most UTFMax-1 bytes back.
	cut := max
	for cut > 0 && max-cut < utf8.UTFMax-1 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	// Only a valid character that really crosses max moves the cut; stray
	// continuation bytes are cut like single characters.
	if r, size := utf8.DecodeRuneInString(s[cut:]); (r == utf8.RuneError && size <= 1) || cut+size <= max {
		cut = max
	}
	return s[:cut], s[cut:]
}
