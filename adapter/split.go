package adapter

import (
	"strings"
	"unicode/utf8"
)

// maxPartBytes is WeCom's limit for a text message's content, in UTF-8 bytes.
const maxPartBytes = 2048

// Split cuts text into parts of at most limit bytes of UTF-8, in order, never
// inside a character, preferring (in this order) paragraph ends, line ends,
// sentence ends (Chinese and Western) and spaces, so that each part reads on
// its own. Joining the parts gives text back exactly.
func Split(text string, limit int) []string {
	if limit < utf8.UTFMax {
		limit = utf8.UTFMax
	}
	var parts []string
	for len(text) > limit {
		cut := cutPoint(text, limit)
		parts = append(parts, text[:cut])
		text = text[cut:]
	}
	if text != "" || len(parts) == 0 {
		parts = append(parts, text)
	}
	return parts
}

// sentenceEnds are the punctuation marks after which a part may end.
var sentenceEnds = []string{"。", "！", "？", "；", "…", ". ", "! ", "? ", "; ", ".\n", "!\n", "?\n"}

// cutPoint returns where to end a part of text (longer than limit) that may
// use up to limit bytes. Breaks in the first quarter of the window are not
// taken: they would leave a stub, and a cut at the last character boundary
// reads better than a message of a few words.
func cutPoint(text string, limit int) int {
	window := text[:limit]
	floor := len(window) / 4
	if i := strings.LastIndex(window, "\n\n"); i >= floor {
		return i + 2
	}
	if i := strings.LastIndexByte(window, '\n'); i >= floor {
		return i + 1
	}
	best := -1
	for _, end := range sentenceEnds {
		if i := strings.LastIndex(window, end); i >= 0 && i+len(end) > best {
			best = i + len(end)
		}
	}
	if best > floor {
		return best
	}
	if i := strings.LastIndexByte(window, ' '); i >= floor {
		return i + 1
	}
	// No break at all: cut at the last character boundary.
	cut := limit
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	if cut == 0 {
		// Not valid UTF-8 at all; any cut is as good as another.
		return limit
	}
	return cut
}
