package wxcrypto

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"testing"
	"unicode/utf8"
)

// Seed corpora live in testdata/fuzz/FuzzXxx (the vectors and the tricky
// cases of the table tests), so plain `go test` replays them.

// refMessage is Message as encoding/xml would read it: the reference the
// hand-written reader must agree with.
type refMessage struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string   `xml:"ToUserName"`
	FromUserName string   `xml:"FromUserName"`
	CreateTime   int64    `xml:"CreateTime"`
	MsgType      string   `xml:"MsgType"`
	Content      string   `xml:"Content"`
	MsgID        string   `xml:"MsgId"`
	Event        string   `xml:"Event"`
	EventKey     string   `xml:"EventKey"`
	PicURL       string   `xml:"PicUrl"`
	MediaID      string   `xml:"MediaId"`
	Format       string   `xml:"Format"`
	ThumbMediaID string   `xml:"ThumbMediaId"`
	Title        string   `xml:"Title"`
	Description  string   `xml:"Description"`
	URL          string   `xml:"Url"`
	LocationX    string   `xml:"Location_X"`
	LocationY    string   `xml:"Location_Y"`
	Scale        string   `xml:"Scale"`
	Label        string   `xml:"Label"`
	AgentID      int64    `xml:"AgentID"`
	Token        string   `xml:"Token"`
	OpenKfID     string   `xml:"OpenKfId"`
}

func (r refMessage) message() Message {
	return Message{
		ToUserName: r.ToUserName, FromUserName: r.FromUserName, CreateTime: r.CreateTime,
		MsgType: r.MsgType, Content: r.Content, MsgID: r.MsgID, Event: r.Event, EventKey: r.EventKey,
		PicURL: r.PicURL, MediaID: r.MediaID, Format: r.Format, ThumbMediaID: r.ThumbMediaID,
		Title: r.Title, Description: r.Description, URL: r.URL,
		LocationX: r.LocationX, LocationY: r.LocationY, Scale: r.Scale, Label: r.Label,
		AgentID: r.AgentID, Token: r.Token, OpenKfID: r.OpenKfID,
	}
}

type refEnvelope struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
	AgentID    string   `xml:"AgentID"`
}

// unsupported names the construct that makes our reader refuse a document
// encoding/xml accepts, or returns "" if there is none: then the refusal is
// a bug. It is the list at the top of xml.go, checked token by token.
func unsupported(doc []byte) string {
	d := xml.NewDecoder(bytes.NewReader(doc))
	depth := 0
	prolog := true // only a BOM, whitespace and the declaration so far
	for {
		off := d.InputOffset()
		tok, err := d.RawToken()
		if err != nil {
			return "" // encoding/xml accepted the document: the reader should have too
		}
		raw := doc[off:d.InputOffset()]
		switch t := tok.(type) {
		case xml.ProcInst:
			if !prolog || depth > 0 || t.Target != "xml" {
				return "processing instruction"
			}
			prolog = false
		case xml.Directive:
			return "directive"
		case xml.Comment:
			prolog = false
		case xml.CharData:
			if depth > 0 {
				continue
			}
			if bytes.HasPrefix(raw, []byte("<![CDATA[")) {
				return "CDATA outside the root"
			}
			if off == 0 {
				raw = bytes.TrimPrefix(raw, []byte(bom))
			}
			if len(bytes.Trim(raw, " \t\r\n")) > 0 {
				return "text outside the root"
			}
		case xml.StartElement:
			prolog = false
			if bad := badName(t.Name); bad != "" {
				return bad
			}
			for _, a := range t.Attr {
				if bad := badName(a.Name); bad != "" {
					return bad
				}
			}
			depth++
			// root = 1, child = 2, then maxDepth levels on the stack.
			if depth > maxDepth+2 {
				return "nesting too deep"
			}
		case xml.EndElement:
			depth--
			if depth == 0 {
				if len(bytes.Trim(doc[d.InputOffset():], " \t\r\n")) > 0 {
					return "content after the root"
				}
				return ""
			}
		}
	}
}

func badName(n xml.Name) string {
	if n.Space != "" {
		return "namespace prefix"
	}
	for i := 0; i < len(n.Local); i++ {
		if c := n.Local[i]; c == ':' || c >= utf8.RuneSelf {
			return "namespace prefix or non-ASCII name"
		}
	}
	return ""
}

func FuzzParseMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, err := parseMessage(doc)
		var ref refMessage
		refErr := xml.Unmarshal(doc, &ref)
		if err != nil {
			if !errors.Is(err, ErrXML) {
				t.Fatalf("error %v does not wrap ErrXML", err)
			}
			if refErr == nil {
				if why := unsupported(doc); why == "" {
					t.Fatalf("encoding/xml accepts %q, we refuse it (%v) for no documented reason", doc, err)
				}
			}
			if _, err2 := ParseMessage(doc); !errors.Is(err2, ErrXML) {
				t.Fatalf("ParseMessage = %v, parseMessage = %v", err2, err)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("we accept %q, encoding/xml refuses it: %v", doc, refErr)
		}
		if want := ref.message(); got != want {
			t.Fatalf("%q:\n got %+v\nwant %+v", doc, got, want)
		}
		m, err := ParseMessage(doc)
		switch {
		case err == nil && m != got:
			t.Fatalf("ParseMessage = %+v, parseMessage = %+v", m, got)
		case err != nil && !errors.Is(err, ErrMsgType):
			t.Fatalf("ParseMessage = %v after parseMessage accepted", err)
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseEnvelope(body)
		var ref refEnvelope
		refErr := xml.Unmarshal(body, &ref)
		if err != nil {
			if !errors.Is(err, ErrXML) {
				t.Fatalf("error %v does not wrap ErrXML", err)
			}
			if refErr == nil && unsupported(body) == "" {
				t.Fatalf("encoding/xml accepts %q, we refuse it (%v) for no documented reason", body, err)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("we accept %q, encoding/xml refuses it: %v", body, refErr)
		}
		if want := (Envelope{ToUserName: ref.ToUserName, Encrypt: ref.Encrypt, AgentID: ref.AgentID}); got != want {
			t.Fatalf("%q:\n got %+v\nwant %+v", body, got, want)
		}
		e, err := ParseEnvelope(body)
		if (err == nil) != (got.Encrypt != "") || err == nil && e != got {
			t.Fatalf("ParseEnvelope = %+v, %v; parseEnvelope = %+v", e, err, got)
		}
	})
}

// FuzzDecrypt feeds Decrypt both arbitrary Encrypt strings and arbitrary
// plaintext blocks sealed with the right key, so the checks after the AES
// step (padding, length field, receive id) are reached too.
func FuzzDecrypt(f *testing.F) {
	app, err := New(testToken, testKey, testCorp)
	if err != nil {
		f.Fatal(err)
	}
	bot, err := New(testToken, testKey, "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, encrypt string, plain []byte) {
		for _, c := range []*Cipher{app, bot} {
			checkOpen(t, c, encrypt)
			if len(plain) == 0 {
				continue
			}
			// Extend to whole 32-byte blocks with the last byte, which
			// keeps a fuzzed pad value plausible.
			raw := bytes.Clone(plain)
			for len(raw)%padBlock != 0 {
				raw = append(raw, raw[len(raw)-1])
			}
			enc := seal(t, c, raw)
			msg := checkOpen(t, c, enc)
			wantMsg, wantErr := refOpen(raw, c.ReceiveID())
			if wantErr == nil && !bytes.Equal(msg, wantMsg) {
				t.Fatalf("Decrypt = %q, reference %q", msg, wantMsg)
			}
			if _, err := c.Decrypt(enc); !errors.Is(err, wantErr) {
				t.Fatalf("Decrypt error = %v, reference %v", err, wantErr)
			}
		}
	})
}

// checkOpen decrypts encrypt and, when that succeeds, checks that sealing
// the result again with the same random prefix gives the same ciphertext:
// Decrypt accepts only canonical, fully checked plaintexts.
func checkOpen(t *testing.T, c *Cipher, encrypt string) []byte {
	t.Helper()
	random, msg, err := c.open(encrypt)
	if err != nil {
		for _, s := range []error{ErrBase64, ErrBlockSize, ErrPadding, ErrLength, ErrReceiveID} {
			if errors.Is(err, s) {
				return nil
			}
		}
		t.Fatalf("error %v wraps no sentinel", err)
	}
	again := c.EncryptWithRandom([16]byte(random), msg)
	a, _ := base64.StdEncoding.DecodeString(encrypt)
	b, _ := base64.StdEncoding.DecodeString(again)
	if !bytes.Equal(a, b) {
		t.Fatalf("re-encrypting the message of %q gives %q", encrypt, again)
	}
	got, err := c.Decrypt(again)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %q, %v; want %q", got, err, msg)
	}
	return msg
}

// refOpen is the plaintext layout rule written as plainly as possible, to
// compare Decrypt against.
func refOpen(raw []byte, receiveID string) ([]byte, error) {
	pad := int(raw[len(raw)-1])
	if pad == 0 || pad > 32 || !bytes.Equal(raw[len(raw)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, ErrPadding
	}
	body := raw[:len(raw)-pad]
	if len(body) < 20 {
		return nil, ErrLength
	}
	n := int64(binary.BigEndian.Uint32(body[16:20]))
	if n > int64(len(body)-20) {
		return nil, ErrLength
	}
	if string(body[20+n:]) != receiveID {
		return nil, ErrReceiveID
	}
	return body[20 : 20+n], nil
}

// TestMatchesEncodingXML runs the differential check of FuzzParseMessage on
// hand-picked content at the edges of the XML rules, where random mutation
// is slow to reach.
func TestMatchesEncodingXML(t *testing.T) {
	snippets := []string{
		"", " ", "\t\n\r", "\r\n\r\n", "a\r", "\u0085\u00a0", "\x7f",
		"\uD7FF", "\uE000", "\uFFFD", "\uFFFE", "\uFFFF", "\U00010000", "\U0010FFFF",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\x80", "\xe4\xbd", "\xe4\xbd<![CDATA[\xa0]]>",
		"&#9;", "&#10;", "&#13;", "&#31;", "&#32;", "&#xD7FF;", "&#xD800;", "&#xDFFF;", "&#xE000;",
		"&#xFFFD;", "&#xFFFE;", "&#xFFFF;", "&#x10000;", "&#x10FFFF;", "&#x110000;", "&#1114111;",
		"&#0000000000000000000000065;", "&#x00041;", "&#18446744073709551617;", "&#;", "&#x;", "&#-1;",
		"&#X41;", "&#65", "&lt", "&LT;", "&lt;&gt;&amp;&quot;&apos;", "&amp;amp;", "&a;", "&;", "&",
		"]", "]]", "]]>", "]>", "] ]>", "]]&gt;", "]&#93;>", "]]\r>", "]\r]>", "]]]>", "]]]]>",
		"]]&amp;>", "]&amp;]>", "\r&amp;\n", "]]\u00e9>", "]]<!---->>", "]]<![CDATA[]]>>", "]]<a/>>",
		"<![CDATA[]]>", "<![CDATA[]]]]>", "<![CDATA[]]]>]]>", "<![CDATA[a]]>]]>",
		"<![CDATA[\r]]>\n", "<![CDATA[\r\n]]>", "\r<![CDATA[\n]]>", "<![cdata[x]]>", "<![CDATA[x",
		"<!---->", "<!--->-->", "<!-- - -->", "<!--a--b-->", "<!--\x00-->", "<!-x-->", "<!>", "<!DOCTYPE x>",
		"<?pi?>", "<?xml?>", "<a/>", "<a />", "<a/ >", "<a></a >", "<a></ a>", "<a x='1'y=\"2\"/>",
		"<a x = '1' />", "<a x='<'/>", "<a x='&amp;&#0;'/>", "<a x='\x01'/>", "<a x='\r]]>'/>", "<a x/>",
		"<a x=1/>", "<a:b/>", "<a:b></a:b>", "<_a/>", "<a.b-c_1/>", "<1a/>", "<-a/>", "<.a/>",
		"<\u00e9/>", "<a\u00e9/>", "<a\xff/>", "<a#/>", "< a/>", "<a><b></b></a>", "<a><b></a></b>",
		"</a>", "<a>", "x</Content><Content>y",
	}
	for _, s := range snippets {
		for _, d := range []string{
			doc(textHead + "<Content>" + s + "</Content>"),
			doc(textHead + s),
			"<xml" + s + ">" + textHead + "</xml>",
			s + doc(textHead),
			doc(textHead) + s,
		} {
			got, err := parseMessage([]byte(d))
			var ref refMessage
			refErr := xml.Unmarshal([]byte(d), &ref)
			switch {
			case err == nil && refErr != nil:
				t.Errorf("%q: we accept, encoding/xml refuses: %v", d, refErr)
			case err == nil && got != ref.message():
				t.Errorf("%q:\n got %+v\nwant %+v", d, got, ref.message())
			case err != nil && refErr == nil && unsupported([]byte(d)) == "":
				t.Errorf("%q: encoding/xml accepts, we refuse: %v", d, err)
			}
		}
	}
}
