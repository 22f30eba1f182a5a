package aibot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseMessage feeds untrusted bodies (a decrypted callback, a frame's
// body) to ParseMessage and everything the pipeline calls on the result.
// The seeds are the samples in testdata/messages.
func FuzzParseMessage(f *testing.F) {
	files, err := filepath.Glob("testdata/messages/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no samples: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"msgid":"1","msgtype":"event","event":{"eventtype":"template_card_event","template_card_event":{"cardtype":"a","card_type":"b"}}}`))
	f.Add([]byte(`{"msgid":"1","msgtype":"text","chattype":"group","text":{"content":"@\u2005"}}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		m, err := ParseMessage(plain)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m.MsgType == "" {
			t.Fatal("accepted without msgtype")
		}
		if m.MsgID == "" && m.MsgType != TypeStream && (m.Event == nil || m.Event.EventType != EventDisconnected) {
			t.Fatal("accepted without msgid")
		}
		_ = m.Known()
		_ = m.Conversation()
		prompt, ok := m.Prompt()
		if ok != (prompt != "") || (ok && strings.TrimSpace(prompt) != prompt) {
			t.Fatalf("Prompt() = %q, %v", prompt, ok)
		}
		if utf8.Valid(plain) && !utf8.ValidString(prompt) {
			t.Fatalf("invalid UTF-8 prompt %q from valid input", prompt)
		}
	})
}

// FuzzOpen feeds untrusted POST bodies and query values to Codec.Open. The
// seeds are the vectors, so the valid path is explored too.
func FuzzOpen(f *testing.F) {
	c, v := newTestCodec(f)
	for _, tc := range v.Callbacks {
		f.Add([]byte(`{"encrypt":"`+tc.Encrypt+`"}`), tc.MsgSignature, tc.Timestamp, tc.Nonce)
		f.Add([]byte(`{"Encrypt":"`+tc.Encrypt+`"}`), tc.MsgSignature, tc.Timestamp, tc.Nonce)
	}
	f.Add([]byte(`{"encrypt":"AAAA"}`), strings.Repeat("0", 40), "1", "n")
	f.Add([]byte(`<xml><Encrypt>x</Encrypt></xml>`), "", "", "")
	sentinels := []error{ErrSignature, ErrMalformed, ErrTooLarge}
	f.Fuzz(func(t *testing.T, body []byte, sig, ts, nonce string) {
		plain, err := c.Open(Query{Signature: sig, Timestamp: ts, Nonce: nonce}, bytes.NewReader(body))
		if err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 || plain != nil {
				t.Fatalf("Open = %q, %v: want nil and exactly one sentinel", plain, err)
			}
			return
		}
		// Only a body signed with the token opens; it is then something
		// the vectors hold, and ParseMessage must cope with it.
		if _, err := ParseMessage(plain); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
	})
}
