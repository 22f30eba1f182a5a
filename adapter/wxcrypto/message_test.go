package wxcrypto

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMessageVectors(t *testing.T) {
	base := Message{
		ToUserName:   testCorp,
		FromUserName: "zhangsan",
		CreateTime:   1764000000,
		AgentID:      1000002,
	}
	with := func(f func(m *Message)) Message {
		m := base
		f(&m)
		return m
	}
	want := map[string]Message{
		"text_cn": with(func(m *Message) {
			m.MsgType, m.Content, m.MsgID = "text", "你好，请介绍一下企业微信", "7440000000000000001"
		}),
		"text_emoji_multiline": with(func(m *Message) {
			m.MsgType, m.Content, m.MsgID = "text", "第一行🙂\n第二行 & <tag> \"quoted\"", "7440000000000000002"
		}),
		"image": with(func(m *Message) {
			m.MsgType, m.PicURL, m.MediaID, m.MsgID = "image", "https://example.invalid/p.jpg", "MEDIA_ID_1", "7440000000000000003"
		}),
		"voice": with(func(m *Message) {
			m.MsgType, m.MediaID, m.Format, m.MsgID = "voice", "MEDIA_ID_2", "amr", "7440000000000000004"
		}),
		"event_enter_agent": with(func(m *Message) { m.MsgType, m.Event = "event", "enter_agent" }),
		"event_subscribe":   with(func(m *Message) { m.MsgType, m.Event = "event", "subscribe" }),
		"passive_reply": {
			ToUserName: "zhangsan", FromUserName: testCorp, CreateTime: 1764000008,
			MsgType: "text", Content: "收到",
		},
	}
	v := loadVectors(t)
	seen := map[string]bool{}
	for _, tc := range v.Cases {
		if !tc.Valid || tc.Kind != "message" && tc.Kind != "reply" {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			w, ok := want[tc.Name]
			if !ok {
				t.Fatalf("no expected Message for vector %q", tc.Name)
			}
			seen[tc.Name] = true
			got, err := ParseMessage([]byte(tc.Plaintext))
			if err != nil {
				t.Fatal(err)
			}
			if got != w {
				t.Errorf("ParseMessage =\n%+v\nwant\n%+v", got, w)
			}
		})
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("vector %q missing", name)
		}
	}
}

// doc wraps children in the usual root.
func doc(children string) string { return "<xml>" + children + "</xml>" }

const textHead = "<ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[u]]></FromUserName>" +
	"<CreateTime>1764000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"

func TestParseMessage(t *testing.T) {
	text := func(content string) Message {
		return Message{ToUserName: "ww1", FromUserName: "u", CreateTime: 1764000000, MsgType: "text", Content: content}
	}
	tests := []struct {
		name string
		in   string
		want Message
		err  error // nil: success
	}{
		{"cdata", doc(textHead + "<Content><![CDATA[a&b<c>]]></Content>"), text("a&b<c>"), nil},
		{"entity-encoded plain text", doc(textHead + "<Content>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Content>"), text(`a & b <c> "d" 'e'`), nil},
		{"numeric references", doc(textHead + "<Content>&#20320;&#x597D;&#x1F642;&#65;</Content>"), text("你好🙂A"), nil},
		{"surrogate reference becomes U+FFFD", doc(textHead + "<Content>&#xD800;</Content>"), text("\uFFFD"), nil},
		{"text and cdata mixed", doc(textHead + "<Content>a<![CDATA[<b>]]>c&amp;</Content>"), text("a<b>c&"), nil},
		{"CRLF folded, also in CDATA", doc(textHead + "<Content>a\r\nb\rc<![CDATA[d\r\ne]]></Content>"), text("a\nb\ncd\ne"), nil},
		{"nested unknown elements skipped", doc(textHead +
			"<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[x]]></PicMd5Sum><Content>no</Content></item></PicList></SendPicsInfo>" +
			"<Content>yes</Content>"), text("yes"), nil},
		{"nested element inside a known one", doc(textHead + "<Content>a<b>ignored</b>c</Content>"), text("ac"), nil},
		{"self-closing elements", doc(textHead + "<Content/><Empty/><Other a='1'/>"), text(""), nil},
		{"last duplicate wins", doc(textHead + "<Content>one</Content><Content>two</Content>"), text("two"), nil},
		{"prolog, BOM, whitespace, comments", bom + " <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<xml>\n  " +
			strings.ReplaceAll(strings.ReplaceAll(textHead, "e><F", "e>\n  <F"), "e><C", "e>\n  <C") + "<!-- in -->\n  <Content>x<!-- y -->z</Content>\n</xml>\n", text("xz"), nil},
		{"attributes ignored", doc(strings.Replace(textHead, "<MsgType>", `<MsgType a="1" b='&amp;'>`, 1) + "<Content >x</Content >"), text("x"), nil},
		{"integer whitespace trimmed", doc(strings.Replace(textHead, "1764000000", " 1764000000\n", 1) + "<AgentID></AgentID>"), text(""), nil},
		{"location as text", doc(textHead[:strings.Index(textHead, "<MsgType>")] + "<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[广州]]></Label>"),
			Message{ToUserName: "ww1", FromUserName: "u", CreateTime: 1764000000, MsgType: "location", LocationX: "23.134521", LocationY: "113.358803", Scale: "20", Label: "广州"}, nil},
		{"link", doc(textHead[:strings.Index(textHead, "<MsgType>")] + "<MsgType>link</MsgType><Title>t</Title><Description>d</Description><Url>https://u</Url><PicUrl>p</PicUrl><MsgId>9</MsgId>"),
			Message{ToUserName: "ww1", FromUserName: "u", CreateTime: 1764000000, MsgType: "link", Title: "t", Description: "d", URL: "https://u", PicURL: "p", MsgID: "9"}, nil},
		{"video", doc(textHead[:strings.Index(textHead, "<MsgType>")] + "<MsgType>video</MsgType><MediaId>m</MediaId><ThumbMediaId>th</ThumbMediaId><EventKey>k</EventKey>"),
			Message{ToUserName: "ww1", FromUserName: "u", CreateTime: 1764000000, MsgType: "video", MediaID: "m", ThumbMediaID: "th", EventKey: "k"}, nil},

		{"unexpected MsgType", doc(strings.Replace(textHead, "text", "miniprogram", 1)), Message{}, ErrMsgType},
		{"MsgType differs in case", doc(strings.Replace(textHead, "text", "Text", 1)), Message{}, ErrMsgType},
		{"MsgType with spaces", doc(strings.Replace(textHead, "<![CDATA[text]]>", " text ", 1)), Message{}, ErrMsgType},
		{"no MsgType", doc("<Content>x</Content>"), Message{}, ErrMsgType},
		{"empty root", "<xml/>", Message{}, ErrMsgType},
		{"non-integer CreateTime", doc(strings.Replace(textHead, "1764000000", "17640x", 1)), Message{}, ErrXML},
		{"CreateTime in CDATA spaces only", doc(strings.Replace(textHead, "1764000000", "<![CDATA[ ]]>", 1)), Message{}, ErrXML},
		{"CreateTime overflow", doc(strings.Replace(textHead, "1764000000", "99999999999999999999", 1)), Message{}, ErrXML},
		{"non-integer AgentID", doc(textHead + "<AgentID>1e6</AgentID>"), Message{}, ErrXML},
		{"bad AgentID before a good one", doc(textHead + "<AgentID>x</AgentID><AgentID>1</AgentID>"), Message{}, ErrXML},
		{"empty document", "", Message{}, ErrXML},
		{"whitespace only", " \n", Message{}, ErrXML},
		{"truncated in element", doc(textHead)[:60], Message{}, ErrXML},
		{"truncated before </xml>", "<xml>" + textHead, Message{}, ErrXML},
		{"truncated in CDATA", "<xml>" + textHead + "<Content><![CDATA[abc]]", Message{}, ErrXML},
		{"truncated in end tag", doc(textHead)[:len(doc(textHead))-2], Message{}, ErrXML},
		{"mismatched tags", doc(textHead + "<Content>x</Contents>"), Message{}, ErrXML},
		{"mismatched nested tags", doc(textHead + "<A><B></A></B>"), Message{}, ErrXML},
		{"unclosed nested", doc(textHead + "<A><B></A>"), Message{}, ErrXML},
		{"end tag without start", "<xml></Content></xml>", Message{}, ErrXML},
		{"wrong root", "<root>" + textHead + "</root>", Message{}, ErrXML},
		{"content after root", doc(textHead) + "x", Message{}, ErrXML},
		{"element after root", doc(textHead) + "<xml/>", Message{}, ErrXML},
		{"comment after root", doc(textHead) + "<!-- -->", Message{}, ErrXML},
		{"text before root", "x" + doc(textHead), Message{}, ErrXML},
		{"unknown entity", doc(textHead + "<Content>&nbsp;</Content>"), Message{}, ErrXML},
		{"bare ampersand", doc(textHead + "<Content>a & b</Content>"), Message{}, ErrXML},
		{"reference without semicolon", doc(textHead + "<Content>&amp</Content>"), Message{}, ErrXML},
		{"uppercase X reference", doc(textHead + "<Content>&#X41;</Content>"), Message{}, ErrXML},
		{"reference to NUL", doc(textHead + "<Content>&#0;</Content>"), Message{}, ErrXML},
		{"reference beyond Unicode", doc(textHead + "<Content>&#x110000;</Content>"), Message{}, ErrXML},
		{"control character", doc(textHead + "<Content>a\x01b</Content>"), Message{}, ErrXML},
		{"control character in CDATA", doc(textHead + "<Content><![CDATA[a\x00b]]></Content>"), Message{}, ErrXML},
		{"invalid UTF-8", doc(textHead + "<Content>\xff</Content>"), Message{}, ErrXML},
		{"U+FFFE", doc(textHead + "<Content>\uFFFE</Content>"), Message{}, ErrXML},
		{"]]> in text", doc(textHead + "<Content>a]]>b</Content>"), Message{}, ErrXML},
		{"DOCTYPE", "<!DOCTYPE xml>" + doc(textHead), Message{}, ErrXML},
		{"processing instruction inside", doc(textHead + "<?pi x?>"), Message{}, ErrXML},
		{"namespace prefix", doc(textHead + "<a:Content>x</a:Content>"), Message{}, ErrXML},
		{"unquoted attribute", doc(textHead + "<Content a=1>x</Content>"), Message{}, ErrXML},
		{"< in attribute", doc(textHead + `<Content a="<">x</Content>`), Message{}, ErrXML},
		{"encoding GBK", `<?xml version="1.0" encoding="GBK"?>` + doc(textHead), Message{}, ErrXML},
		{"version 1.1", `<?xml version="1.1"?>` + doc(textHead), Message{}, ErrXML},
		{"-- in comment", doc(textHead + "<!-- a -- b -->"), Message{}, ErrXML},
		{"too deep", doc(textHead + strings.Repeat("<a>", maxDepth+2) + strings.Repeat("</a>", maxDepth+2)), Message{}, ErrXML},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMessage([]byte(tc.in))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseMessage error = %v, want %v", err, tc.err)
				}
				if got != (Message{}) {
					t.Errorf("ParseMessage returned %+v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParseMessage =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseMessageDepthLimit(t *testing.T) {
	// maxDepth open elements below a child are fine, one more is not.
	ok := doc(textHead + "<C>" + strings.Repeat("<a>", maxDepth) + "<b/>" + strings.Repeat("</a>", maxDepth) + "</C>")
	if _, err := ParseMessage([]byte(ok)); err != nil {
		t.Errorf("depth %d: %v", maxDepth, err)
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Envelope
		ok   bool
	}{
		{"wecom", "<xml><ToUserName><![CDATA[ww1a2b3c4d5e6f7a8b]]></ToUserName><Encrypt><![CDATA[h7zg+/=]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
			Envelope{ToUserName: "ww1a2b3c4d5e6f7a8b", Encrypt: "h7zg+/=", AgentID: "1000002"}, true},
		{"pretty-printed", "<xml>\n  <ToUserName><![CDATA[ww1]]></ToUserName>\n  <AgentID>1</AgentID>\n  <Encrypt>abc</Encrypt>\n</xml>\n",
			Envelope{ToUserName: "ww1", Encrypt: "abc", AgentID: "1"}, true},
		{"Encrypt only", "<xml><Encrypt>abc</Encrypt><Other><x/></Other></xml>", Envelope{Encrypt: "abc"}, true},
		{"missing Encrypt", "<xml><ToUserName>ww1</ToUserName></xml>", Envelope{}, false},
		{"empty Encrypt", "<xml><Encrypt><![CDATA[]]></Encrypt></xml>", Envelope{}, false},
		{"self-closing Encrypt", "<xml><Encrypt/></xml>", Envelope{}, false},
		{"JSON body", `{"encrypt":"abc"}`, Envelope{}, false},
		{"truncated", "<xml><Encrypt>abc</Encrypt>", Envelope{}, false},
		{"wrong root", "<x><Encrypt>abc</Encrypt></x>", Envelope{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEnvelope([]byte(tc.in))
			if !tc.ok {
				if !errors.Is(err, ErrXML) {
					t.Fatalf("ParseEnvelope error = %v, want ErrXML", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ParseEnvelope = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestErrorsDoNotLeakContent(t *testing.T) {
	secret := "SECRET-CONTENT"
	for _, in := range []string{
		doc(textHead + "<Content>" + secret + "</Content"),
		doc(textHead + "<Content>" + secret + "&bad;</Content>"),
		doc(strings.Replace(textHead, "text", secret, 1)),
		doc(strings.Replace(textHead, "1764000000", secret, 1)),
	} {
		_, err := ParseMessage([]byte(in))
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("error %v for %q", err, in)
		}
	}
}

// TestKFCallbackVector is the 微信客服 callback of KF.md §2, made with the
// official @wecom/crypto: receive id is the CorpID, as for any app callback,
// and the plaintext carries Token and OpenKfId but no FromUserName or MsgId.
func TestKFCallbackVector(t *testing.T) {
	const (
		timestamp = "1764000100"
		nonce     = "5523841"
		signature = "903330e05cf0b5defae2a7852e9f7870081b01ea"
		encrypt   = "h7zgTn55k0uAk8B3o5+JLVdfxBQvS8qKJc8HAgJjiHVoqWEFaidmudZlQnLJRqNZwxQhF3jCORZhv/Y7CJKaxLjvPPp0U5EioFMovt32BB5ptAUCGLpI7Fpp+dfPckvZUYW5q/eG4JUzdJ2vasoVNUZqKlyj20hZx+PkcU1g+WsIVS/Zdg8daMEZwUMGqw2V8ogTUKhw0yCynIMPk06KgZw3Bb3TyB/l6yvCutc3u57bcwzKynD81pKU+6Lcr5orrr+ZCqIU3T1ZvLzkj0iVMg1hrHF9SN4OW/tJlrcMhiSpaRmWjs7l8qOHXYRLREvUODwiRtr77iIHhC7FdGG9ezekw7Hr0J1BT6PiM3mysJLsa76B9z8OLI7eoz2qdO4ulJmp/0QvcLeacCiC2NReFCJxSii2nv4bKjROdALhvkGxtZqnK8ArocGeCW5Bvy5Lk1ExB4KV3ceLgIxb7L+F3rCA7XQ7/pbsuEMmXxLJwUZtvfZWSZKpxYtWlAz54vge"
	)
	c, err := New(testToken, testKey, testCorp)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(signature, timestamp, nonce, encrypt); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	plain, err := c.Decrypt(encrypt)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	m, err := ParseMessage(plain)
	if err != nil {
		t.Fatal(err)
	}
	want := Message{ToUserName: testCorp, CreateTime: 1764000100, MsgType: "event", Event: "kf_msg_or_event",
		Token: "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR", OpenKfID: "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"}
	if m != want {
		t.Errorf("ParseMessage =\n%+v\nwant\n%+v", m, want)
	}
	// The AI bot's receive id "" (or another corp's) must not open it.
	other, err := New(testToken, testKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Decrypt(encrypt); !errors.Is(err, ErrReceiveID) {
		t.Errorf("Decrypt with receive id \"\" = %v, want ErrReceiveID", err)
	}
}
