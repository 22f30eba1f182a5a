package wxcrypto

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds a small XML reader for the one document shape WeCom sends:
// an optional declaration, a root <xml> and flat children whose text is CDATA
// and/or plain text. It exists for the callback target (BenchmarkCallback:
// signature, decrypt and parse of a text message in at most 8 µs):
// encoding/xml alone costs 20–30 µs and dozens of allocations per callback.
//
// Whatever it accepts it must read exactly as encoding/xml would into an
// equivalent struct (FuzzParseMessage checks this), so the character checks,
// entity rules, "\r\n" folding and "]]>" rule below copy encoding/xml's
// strict mode. It refuses a few constructs encoding/xml accepts but WeCom
// never sends, to keep this reader small:
//   - DOCTYPE and other <!directives>, and processing instructions other than
//     one leading <?xml ...?> declaration;
//   - namespace prefixes and non-ASCII element or attribute names;
//   - anything but a UTF-8 BOM, whitespace, the declaration and comments
//     before the root, and anything but whitespace after it;
//   - nesting deeper than maxDepth below a child of the root.

// maxDepth bounds the open elements below a child of <xml> (WeCom nests
// three: SendPicsInfo/PicList/item); the end-tag stack lives on the stack.
const maxDepth = 32

const bom = "\xEF\xBB\xBF"

type xmlReader struct {
	s     string
	i     int
	stack [maxDepth]string
}

func (r *xmlReader) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrXML, what, r.i)
}

func (r *xmlReader) eof() error { return r.fail("unexpected end of document") }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (r *xmlReader) space() {
	i := r.i
	for i < len(r.s) && isSpace(r.s[i]) {
		i++
	}
	r.i = i
}

// isNameByte is encoding/xml's test for where a name ends, so that "<a#>" is
// refused here exactly as there: ASCII letters, digits, "_:.-", and every
// byte >= 0x80. Bit masks, because names are most of the bytes of a WeCom
// document outside CDATA.
func isNameByte(c byte) bool {
	const (
		lo = 0x7ff600000000000 // "-.0-9:"
		hi = 0x7fffffe87fffffe // "A-Z_a-z"
	)
	switch {
	case c < 64:
		return lo>>c&1 != 0
	case c < utf8.RuneSelf:
		return hi>>(c-64)&1 != 0
	}
	return true
}

// name reads an element or attribute name. Only [A-Za-z_][A-Za-z0-9_.-]* is
// accepted: encoding/xml's names without namespace prefixes or non-ASCII.
func (r *xmlReader) name() (string, error) {
	// Locals, not r.i: the compiler would store to r on every byte.
	s, start := r.s, r.i
	i := start
	for i < len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' ||
			i > start && ('0' <= c && c <= '9' || c == '.' || c == '-') {
			i++
			continue
		}
		break
	}
	r.i = i
	switch {
	case i < len(s) && isNameByte(s[i]):
		// ':', a byte >= 0x80, or a digit, '.' or '-' in first place:
		// encoding/xml reads on (or refuses), so must we refuse.
		return "", r.fail("namespace prefix, non-ASCII or invalid name")
	case i == start && i == len(s):
		return "", r.eof()
	case i == start:
		return "", r.fail("expected a name")
	}
	return s[start:i], nil
}

// startTag reads the rest of a start tag after "<": name, attributes (checked
// and dropped) and ">" or "/>".
func (r *xmlReader) startTag() (name string, empty bool, err error) {
	if name, err = r.name(); err != nil {
		return "", false, err
	}
	for {
		r.space()
		if r.i >= len(r.s) {
			return "", false, r.eof()
		}
		switch r.s[r.i] {
		case '>':
			r.i++
			return name, false, nil
		case '/':
			r.i++
			if r.i >= len(r.s) {
				return "", false, r.eof()
			}
			if r.s[r.i] != '>' {
				return "", false, r.fail("expected /> in element")
			}
			r.i++
			return name, true, nil
		}
		// Like encoding/xml, attributes need no whitespace between them.
		if _, err = r.name(); err != nil {
			return "", false, err
		}
		r.space()
		if r.i >= len(r.s) {
			return "", false, r.eof()
		}
		if r.s[r.i] != '=' {
			return "", false, r.fail("attribute without value")
		}
		r.i++
		r.space()
		if r.i >= len(r.s) {
			return "", false, r.eof()
		}
		q := r.s[r.i]
		if q != '"' && q != '\'' {
			return "", false, r.fail("unquoted attribute value")
		}
		r.i++
		if _, err = r.text(q, false); err != nil {
			return "", false, err
		}
	}
}

// endTag reads the rest of an end tag after "</", which must close want.
// Comparing against the expected name, rather than scanning a name first,
// is what encoding/xml's check amounts to: the name must be want and the
// byte after it must end a name.
func (r *xmlReader) endTag(want string) error {
	rest := r.s[r.i:]
	if !strings.HasPrefix(rest, want) || len(rest) > len(want) && isNameByte(rest[len(want)]) {
		if _, err := r.name(); err != nil {
			return err
		}
		return r.fail("mismatched end tag")
	}
	r.i += len(want)
	r.space()
	if r.i >= len(r.s) {
		return r.eof()
	}
	if r.s[r.i] != '>' {
		return r.fail("invalid characters in end tag")
	}
	r.i++
	return nil
}

// comment skips a comment after "<!--". As in encoding/xml, "--" must be
// followed by ">" and the content is not otherwise checked.
func (r *xmlReader) comment() error {
	var b0, b1 byte
	for {
		if r.i >= len(r.s) {
			return r.eof()
		}
		b := r.s[r.i]
		r.i++
		if b0 == '-' && b1 == '-' {
			if b != '>' {
				return r.fail(`"--" in comment`)
			}
			return nil
		}
		b0, b1 = b1, b
	}
}

// validChars reports whether s is UTF-8 made only of XML characters; that is
// the test encoding/xml applies to all text, CDATA and attribute values.
func validChars(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return false
			}
			i++
			continue
		}
		ch, size := utf8.DecodeRuneInString(s[i:])
		if ch == utf8.RuneError && size == 1 || !validRune(ch) {
			return false
		}
		i += size
	}
	return true
}

// validRune is the XML Char production (encoding/xml's isInCharacterRange).
func validRune(ch rune) bool {
	return ch == 0x09 || ch == 0x0A || ch == 0x0D ||
		ch >= 0x20 && ch <= 0xD7FF ||
		ch >= 0xE000 && ch <= 0xFFFD ||
		ch >= 0x10000 && ch <= 0x10FFFF
}

// foldCR rewrites "\r\n" and lone "\r" to "\n", as XML (and encoding/xml,
// also inside CDATA) requires.
func foldCR(s string) string {
	if strings.IndexByte(s, '\r') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' {
			b = append(b, '\n')
			if i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// cdata reads a CDATA section after "<![CDATA[". With want false the text is
// checked but not copied.
func (r *xmlReader) cdata(want bool) (string, error) {
	k := strings.Index(r.s[r.i:], "]]>")
	if k < 0 {
		r.i = len(r.s)
		return "", r.eof()
	}
	t := r.s[r.i : r.i+k]
	if !validChars(t) {
		return "", r.fail("invalid character in CDATA")
	}
	r.i += k + 3
	if !want {
		return "", nil
	}
	return foldCR(t), nil
}

// entity decodes the reference at s[0] == '&' the way encoding/xml's strict
// mode does: the five predefined names, &#N; and &#xH; (lowercase x only).
// A code point that is a surrogate becomes U+FFFD, as string(rune(n)) does.
func entity(s string) (ch rune, n int, ok bool) {
	if len(s) < 2 {
		return 0, 0, false
	}
	if s[1] != '#' {
		for _, e := range [...]struct {
			name string
			ch   rune
		}{{"lt;", '<'}, {"gt;", '>'}, {"amp;", '&'}, {"apos;", '\''}, {"quot;", '"'}} {
			if strings.HasPrefix(s[1:], e.name) {
				return e.ch, 1 + len(e.name), true
			}
		}
		return 0, 0, false
	}
	j, base := 2, 10
	if j < len(s) && s[j] == 'x' {
		j, base = 3, 16
	}
	start := j
	for j < len(s) && ('0' <= s[j] && s[j] <= '9' ||
		base == 16 && ('a' <= s[j] && s[j] <= 'f' || 'A' <= s[j] && s[j] <= 'F')) {
		j++
	}
	if j >= len(s) || s[j] != ';' {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(s[start:j], base, 64)
	if err != nil || v > utf8.MaxRune {
		return 0, 0, false
	}
	ch = rune(v)
	if !utf8.ValidRune(ch) {
		ch = utf8.RuneError
	}
	return ch, j + 1, true
}

// text reads character data from r.i up to the next "<" (quote 0) or up to
// and past the closing quote of an attribute value. With want false the text
// is checked but not copied. The usual case, text without references or
// "\r", is returned as a substring of the document.
func (r *xmlReader) text(quote byte, want bool) (string, error) {
	s := r.s
	start := r.i
	plain := true
	var b0, b1 byte // last raw bytes, for "]]>" and "\r\n" as encoding/xml tracks them
	i := start
	for ; i < len(s); i++ {
		c := s[i]
		if quote == 0 && c == '>' && b0 == ']' && b1 == ']' {
			r.i = i
			return "", r.fail(`"]]>" outside CDATA`)
		}
		if c == '<' {
			if quote != 0 {
				r.i = i
				return "", r.fail(`"<" in attribute value`)
			}
			break
		}
		if quote != 0 && c == quote {
			break
		}
		switch {
		case c == '&':
			ch, n, ok := entity(s[i:])
			if !ok || !validRune(ch) {
				r.i = i
				return "", r.fail("invalid character reference")
			}
			plain = false
			i += n - 1
			b0, b1 = 0, 0
			continue
		case c >= utf8.RuneSelf:
			ch, size := utf8.DecodeRuneInString(s[i:])
			if ch == utf8.RuneError && size == 1 || !validRune(ch) {
				r.i = i
				return "", r.fail("invalid character")
			}
			i += size - 1
			b0, b1 = 0, 0 // the last two raw bytes were neither ']' nor '\r'
			continue
		case c == '\r':
			plain = false
		case c < 0x20 && c != '\t' && c != '\n':
			r.i = i
			return "", r.fail("invalid character")
		}
		b0, b1 = b1, c
	}
	end := i
	if quote != 0 {
		if i >= len(s) {
			r.i = i
			return "", r.eof()
		}
		i++ // closing quote
	}
	r.i = i
	if !want {
		return "", nil
	}
	t := s[start:end]
	if plain {
		return t, nil
	}
	return decodeText(t), nil
}

// decodeText replaces references and folds "\r" in text that text() has
// already validated.
func decodeText(t string) string {
	b := make([]byte, 0, len(t))
	for i := 0; i < len(t); i++ {
		switch c := t[i]; c {
		case '&':
			ch, n, _ := entity(t[i:])
			b = utf8.AppendRune(b, ch)
			i += n - 1
		case '\r':
			b = append(b, '\n')
			if i+1 < len(t) && t[i+1] == '\n' {
				i++
			}
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// textBuf joins the text pieces of one element without copying the common
// case of a single piece.
type textBuf struct {
	s string
	b []byte
}

func (t *textBuf) add(p string) {
	switch {
	case p == "":
	case t.b != nil:
		t.b = append(t.b, p...)
	case t.s == "":
		t.s = p
	default:
		t.b = make([]byte, 0, len(t.s)+len(p)+32)
		t.b = append(append(t.b, t.s...), p...)
	}
}

func (t *textBuf) String() string {
	if t.b != nil {
		return string(t.b)
	}
	return t.s
}

// open reads everything up to and including the root start tag. It reports
// whether the root was written as <xml/>.
func (r *xmlReader) open() (empty bool, err error) {
	r.i = 0
	if strings.HasPrefix(r.s, bom) {
		r.i = len(bom)
	}
	r.space()
	if strings.HasPrefix(r.s[r.i:], "<?") {
		r.i += 2
		if err := r.declaration(); err != nil {
			return false, err
		}
	}
	for {
		r.space()
		if !strings.HasPrefix(r.s[r.i:], "<!--") {
			break
		}
		r.i += 4
		if err := r.comment(); err != nil {
			return false, err
		}
	}
	if r.i >= len(r.s) {
		return false, r.eof()
	}
	if r.s[r.i] != '<' {
		return false, r.fail("text before the root element")
	}
	r.i++
	if r.i < len(r.s) && (r.s[r.i] == '!' || r.s[r.i] == '?') {
		return false, r.fail("directive or processing instruction before the root element")
	}
	name, empty, err := r.startTag()
	if err != nil {
		return false, err
	}
	if name != "xml" {
		return false, r.fail("root element is not <xml>")
	}
	return empty, nil
}

// declaration reads "<?xml ...?>" after "<?" and, like encoding/xml, refuses
// a version other than 1.0 and an encoding other than UTF-8.
func (r *xmlReader) declaration() error {
	start := r.i
	for r.i < len(r.s) && isNameByte(r.s[r.i]) {
		r.i++
	}
	if r.s[start:r.i] != "xml" {
		return r.fail("processing instruction other than the XML declaration")
	}
	r.space()
	k := strings.Index(r.s[r.i:], "?>")
	if k < 0 {
		r.i = len(r.s)
		return r.eof()
	}
	content := r.s[r.i : r.i+k]
	if v := procInst("version", content); v != "" && v != "1.0" {
		return r.fail("unsupported XML version")
	}
	if e := procInst("encoding", content); e != "" && !strings.EqualFold(e, "utf-8") {
		return r.fail("encoding other than UTF-8")
	}
	r.i += k + 2
	return nil
}

// procInst is encoding/xml's parameter lookup in a declaration, kept
// byte-for-byte so that both accept the same declarations.
func procInst(param, s string) string {
	param += "="
	lenp := len(param)
	i := 0
	var sep byte
	for i < len(s) {
		sub := s[i:]
		k := strings.Index(sub, param)
		if k < 0 || lenp+k >= len(sub) {
			return ""
		}
		i += lenp + k + 1
		if c := sub[lenp+k]; c == '\'' || c == '"' {
			sep = c
			break
		}
	}
	if sep == 0 {
		return ""
	}
	j := strings.IndexByte(s[i:], sep)
	if j < 0 {
		return ""
	}
	return s[i : i+j]
}

// child moves to the next child element of the root, checking and skipping
// text, CDATA and comments between children. ok is false once </xml> has
// been read.
func (r *xmlReader) child() (name string, empty, ok bool, err error) {
	for {
		if r.i >= len(r.s) {
			return "", false, false, r.eof()
		}
		if r.s[r.i] != '<' {
			if _, err := r.text(0, false); err != nil {
				return "", false, false, err
			}
			continue
		}
		r.i++
		kind, _, err := r.markup(false)
		if err != nil {
			return "", false, false, err
		}
		switch kind {
		case markupEnd:
			return "", false, false, r.endTag("xml")
		case markupStart:
			name, empty, err := r.startTag()
			if err != nil {
				return "", false, false, err
			}
			return name, empty, true, nil
		}
	}
}

type markupKind int

const (
	markupSkipped markupKind = iota // comment or CDATA, already consumed
	markupStart                     // r.i is at the start tag's name
	markupEnd                       // r.i is at the end tag's name
)

// markup classifies the markup after "<", consuming comments and CDATA
// sections; with want set it returns the CDATA text.
func (r *xmlReader) markup(want bool) (markupKind, string, error) {
	if r.i >= len(r.s) {
		return 0, "", r.eof()
	}
	switch r.s[r.i] {
	case '/':
		r.i++
		return markupEnd, "", nil
	case '?':
		return 0, "", r.fail("processing instruction")
	case '!':
		rest := r.s[r.i:]
		switch {
		case strings.HasPrefix(rest, "!--"):
			r.i += 3
			return markupSkipped, "", r.comment()
		case strings.HasPrefix(rest, "![CDATA["):
			r.i += 8
			t, err := r.cdata(want)
			return markupSkipped, t, err
		}
		return 0, "", r.fail("directive")
	}
	return markupStart, "", nil
}

// content reads the rest of the child element name (whose start tag has been
// read) through its end tag. With want set it returns the element's own
// character data, text and CDATA joined, skipping nested elements as
// encoding/xml does for a string field.
func (r *xmlReader) content(name string, empty, want bool) (string, error) {
	if empty {
		return "", nil
	}
	var buf textBuf
	depth := 0
	for {
		if r.i >= len(r.s) {
			return "", r.eof()
		}
		if r.s[r.i] != '<' {
			t, err := r.text(0, want && depth == 0)
			if err != nil {
				return "", err
			}
			buf.add(t)
			continue
		}
		r.i++
		kind, t, err := r.markup(want && depth == 0)
		if err != nil {
			return "", err
		}
		switch kind {
		case markupSkipped:
			buf.add(t)
		case markupEnd:
			if depth == 0 {
				if err := r.endTag(name); err != nil {
					return "", err
				}
				return buf.String(), nil
			}
			depth--
			if err := r.endTag(r.stack[depth]); err != nil {
				return "", err
			}
		case markupStart:
			n, empty, err := r.startTag()
			if err != nil {
				return "", err
			}
			if empty {
				continue
			}
			if depth == maxDepth {
				return "", r.fail("elements nested too deep")
			}
			r.stack[depth] = n
			depth++
		}
	}
}

// close checks that only whitespace follows the root element.
func (r *xmlReader) close() error {
	r.space()
	if r.i != len(r.s) {
		return r.fail("content after the root element")
	}
	return nil
}

// parseInt reads an integer field as encoding/xml does: empty is 0,
// surrounding whitespace is ignored, anything else must be a base-10 int64.
func parseInt(t, field string) (int64, error) {
	if t == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is not an integer", ErrXML, field)
	}
	return v, nil
}
