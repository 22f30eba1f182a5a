package aibot

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// vectors mirrors testdata/vectors.json: AIBOT.md §2.9 and the case
// aibot_json_empty_receive_id of ../shared/wecom/vectors.json.
type vectors struct {
	Token          string `json:"token"`
	EncodingAESKey string `json:"encoding_aes_key"`
	RandomPrefix   string `json:"random_prefix_ascii"`
	Callbacks      []struct {
		Name, Timestamp, Nonce, Encrypt, Plaintext string
		MsgSignature                               string `json:"msg_signature"`
	} `json:"callbacks"`
	Replies []struct {
		Name      string
		Timestamp int64
		Nonce     string
		Plaintext string
		Envelope  string
	} `json:"replies"`
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Callbacks) == 0 || len(v.Replies) == 0 {
		t.Fatal("testdata/vectors.json has no cases")
	}
	return v
}

func newTestCodec(t testing.TB) (*Codec, vectors) {
	t.Helper()
	v := loadVectors(t)
	c, err := NewCodec(v.Token, v.EncodingAESKey)
	if err != nil {
		t.Fatal(err)
	}
	c.random = strings.NewReader(strings.Repeat(v.RandomPrefix, 100))
	return c, v
}

func postBody(encrypt string) *strings.Reader {
	b, _ := json.Marshal(map[string]string{"encrypt": encrypt})
	return strings.NewReader(string(b))
}

// Edge cases 2 and 3: the vectors open to their plaintext with receive id "".
func TestOpenVectors(t *testing.T) {
	c, v := newTestCodec(t)
	for _, tc := range v.Callbacks {
		t.Run(tc.Name, func(t *testing.T) {
			raw := "msg_signature=" + tc.MsgSignature + "&timestamp=" + tc.Timestamp + "&nonce=" + tc.Nonce
			q, err := ParseQuery(raw)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := c.Open(q, postBody(tc.Encrypt))
			if err != nil {
				t.Fatal(err)
			}
			if string(plain) != tc.Plaintext {
				t.Fatalf("plaintext = %s, want %s", plain, tc.Plaintext)
			}
			if _, err := ParseMessage(plain); err != nil {
				t.Fatal(err)
			}
			// Sealed again with the vector's prefix, it gives the vector back.
			if got := c.cipher.EncryptWithRandom([16]byte([]byte(v.RandomPrefix)), plain); got != tc.Encrypt {
				t.Errorf("re-encrypted = %s", got)
			}
		})
	}
}

// Edge case 3: the reply vector of §2.9, byte for byte.
func TestSealVector(t *testing.T) {
	c, v := newTestCodec(t)
	r := v.Replies[0]
	reply := PassiveStream("s-0001", "", false, "")
	plain, err := reply.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(plain) != r.Plaintext {
		t.Fatalf("plaintext = %s, want %s", plain, r.Plaintext)
	}
	got, err := c.Seal(reply, r.Nonce, time.Unix(r.Timestamp, 0))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != r.Envelope {
		t.Fatalf("envelope =\n%s\nwant\n%s", got, r.Envelope)
	}
}

// A sealed reply verifies with the reply's own timestamp and the callback's
// nonce, and opens to the reply (the other direction of edge case 3).
func TestSealRoundTrip(t *testing.T) {
	c, err := NewCodec("QDG6eKwecombot", "kWxPEV2UEDyxWpmPdKC3F6gKwLVJqAjLzqxj5dbtbB9")
	if err != nil {
		t.Fatal(err)
	}
	reply := PassiveStream("s-1", "**广州**今日天气 <think>晴</think> & 😀", true, "fb-1")
	body, err := c.Seal(reply, "cb-nonce", time.Unix(1764000300, 0))
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	if len(env) != 4 || env["nonce"] != "cb-nonce" || env["timestamp"] != float64(1764000300) {
		t.Fatalf("envelope %s", body)
	}
	q := Query{Signature: env["msgsignature"].(string), Timestamp: "1764000300", Nonce: "cb-nonce"}
	plain, err := c.Open(q, postBody(env["encrypt"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := reply.Marshal()
	if !bytes.Equal(plain, want) {
		t.Fatalf("opened %s, want %s", plain, want)
	}
	if !strings.Contains(string(plain), "<think>") {
		t.Errorf("HTML escaped: %s", plain)
	}
}

func TestSealEmpty(t *testing.T) {
	c, _ := newTestCodec(t)
	body, err := c.Seal(Reply{}, "n", time.Unix(1, 0))
	if err != nil || body != nil {
		t.Fatalf("Seal(empty) = %q, %v; want nil, nil", body, err)
	}
}

// echoFor makes an echostr (receive id "") that contains each of + / =, so
// the test proves their percent-encoded forms are decoded.
func echoFor(t *testing.T, c *Codec, msg string) string {
	t.Helper()
	for i := range 1000 {
		var random [16]byte
		binary.BigEndian.PutUint64(random[8:], uint64(i))
		e := c.cipher.EncryptWithRandom(random, []byte(msg))
		if strings.ContainsAny(e, "+") && strings.Contains(e, "/") && strings.HasSuffix(e, "=") {
			return e
		}
	}
	t.Fatal("no echostr with + / =")
	return ""
}

// Edge case 1.
func TestVerifyURL(t *testing.T) {
	c, _ := newTestCodec(t)
	const msg = "6372894531908472391"
	echo := echoFor(t, c, msg)
	sig := c.cipher.Signature("1764000000", "n1", echo)
	base := "msg_signature=" + sig + "&timestamp=1764000000&nonce=n1&echostr="
	for name, raw := range map[string]string{
		"percent-encoded": base + url.QueryEscape(echo),
		"raw + / =":       base + echo, // "+" arrives as a space after decoding
	} {
		t.Run(name, func(t *testing.T) {
			q, err := ParseQuery(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.VerifyURL(q)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != msg {
				t.Fatalf("echo = %q, want %q (no quotes, no newline)", got, msg)
			}
		})
	}
	t.Run("bad signature", func(t *testing.T) {
		q, _ := ParseQuery("msg_signature=" + strings.Repeat("0", 40) + "&timestamp=1764000000&nonce=n1&echostr=" + url.QueryEscape(echo))
		got, err := c.VerifyURL(q)
		if !errors.Is(err, ErrSignature) || got != nil {
			t.Fatalf("VerifyURL = %q, %v; want nil, ErrSignature", got, err)
		}
		if strings.Contains(err.Error(), msg) {
			t.Errorf("error leaks the plaintext: %v", err)
		}
	})
	t.Run("no echostr", func(t *testing.T) {
		q, _ := ParseQuery("msg_signature=" + sig + "&timestamp=1764000000&nonce=n1")
		if _, err := c.VerifyURL(q); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	})
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want Query
		ok   bool
	}{
		{"msg_signature=s&timestamp=1&nonce=n", Query{Signature: "s", Timestamp: "1", Nonce: "n"}, true},
		{"msgsignature=s&timestamp=1&nonce=n", Query{Signature: "s", Timestamp: "1", Nonce: "n"}, true},
		{"signature=s&timestamp=1&nonce=n&echostr=a%2Bb%2F%3D", Query{Signature: "s", Timestamp: "1", Nonce: "n", EchoStr: "a+b/="}, true},
		{"timestamp=1&nonce=n", Query{}, false},
		{"msg_signature=s&nonce=n", Query{}, false},
		{"msg_signature=s&timestamp=1", Query{}, false},
		{"msg_signature=s&timestamp=x&nonce=n", Query{}, false},
		{"msg_signature=s&timestamp=1&nonce=n&%zz", Query{}, false},
	}
	for _, tt := range tests {
		q, err := ParseQuery(tt.raw)
		if tt.ok != (err == nil) || q != tt.want {
			t.Errorf("ParseQuery(%q) = %+v, %v", tt.raw, q, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseQuery(%q): %v is not ErrMalformed", tt.raw, err)
		}
	}
}

// rawEncrypt encrypts buf (already padded) with the test key, for
// plaintexts wxcrypto would never produce.
func rawEncrypt(t *testing.T, key string, buf []byte) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(key + "=")
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(buf))
	cipher.NewCBCEncrypter(block, k[:16]).CryptBlocks(out, buf)
	return base64.StdEncoding.EncodeToString(out)
}

// plainFrame is random16 | len | msg | receiveID, padded by pad bytes of padValue.
func plainFrame(msg, receiveID string, pad int, padValue byte) []byte {
	b := make([]byte, 20, 20+len(msg)+len(receiveID)+pad)
	copy(b, "fedcba9876543210")
	binary.BigEndian.PutUint32(b[16:], uint32(len(msg)))
	b = append(b, msg...)
	b = append(b, receiveID...)
	for range pad {
		b = append(b, padValue)
	}
	return b
}

// Edge case 2: what Open refuses, and with which error (the HTTP status).
func TestOpenRefuses(t *testing.T) {
	c, v := newTestCodec(t)
	good := v.Callbacks[0]
	msg := good.Plaintext
	other, err := wxcrypto.New(v.Token, v.EncodingAESKey, "ww1a2b3c4d5e6f7a8b")
	if err != nil {
		t.Fatal(err)
	}
	// Lengths: 20 + len(msg) + pad must be a multiple of 32.
	padFor := func(n int) int { return 32 - n%32 }
	n := 20 + len(msg)
	p := padFor(n)
	mixedPad := plainFrame(msg, "", p, byte(p))
	mixedPad[len(mixedPad)-2] ^= 1
	// 33..64 pad bytes, each of that value: more than WeCom's 32-byte block.
	bigPad := plainFrame(msg, "", p+32, byte(p+32))
	// The frame builder itself is right: correctly padded, it opens.
	control := rawEncrypt(t, v.EncodingAESKey, plainFrame(msg, "", p, byte(p)))
	if got, err := c.Open(Query{Signature: c.cipher.Signature("1", "n", control), Timestamp: "1", Nonce: "n"}, postBody(control)); err != nil || string(got) != msg {
		t.Fatalf("control frame: %q, %v", got, err)
	}

	tests := []struct {
		name    string
		encrypt string // signed correctly unless sig is set
		body    string // overrides the {"encrypt":…} body
		sig     string
		want    error
		wantX   error // the wxcrypto error wrapped, if any
	}{
		{name: "bad signature", encrypt: good.Encrypt, sig: strings.Repeat("a", 40), want: ErrSignature, wantX: wxcrypto.ErrSignature},
		{name: "short signature", encrypt: good.Encrypt, sig: "abc", want: ErrSignature},
		{name: "non-empty receive id", encrypt: other.EncryptWithRandom([16]byte{}, []byte(msg)), want: ErrMalformed, wantX: wxcrypto.ErrReceiveID},
		{name: "mixed pad bytes", encrypt: rawEncrypt(t, v.EncodingAESKey, mixedPad), want: ErrMalformed, wantX: wxcrypto.ErrPadding},
		{name: "pad over 32", encrypt: rawEncrypt(t, v.EncodingAESKey, bigPad), want: ErrMalformed, wantX: wxcrypto.ErrPadding},
		{name: "not base64", encrypt: "!!!!", want: ErrMalformed, wantX: wxcrypto.ErrBase64},
		{name: "truncated", encrypt: good.Encrypt[:len(good.Encrypt)-24] + "==", want: ErrMalformed},
		{name: "not json", body: "encrypt=abc", want: ErrMalformed},
		{name: "xml", body: "<xml><Encrypt>abc</Encrypt></xml>", want: ErrMalformed},
		{name: "no encrypt", body: `{"msg":"x"}`, want: ErrMalformed},
		{name: "empty encrypt", body: `{"encrypt":""}`, want: ErrMalformed},
		{name: "empty body", body: " ", want: ErrMalformed},
		{name: "too large", body: `{"encrypt":"` + strings.Repeat("A", MaxBodyBytes) + `"}`, want: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if body == "" {
				b, _ := json.Marshal(map[string]string{"encrypt": tt.encrypt})
				body = string(b)
			}
			sig := tt.sig
			if sig == "" {
				sig = c.cipher.Signature("1764000007", "n0nce", tt.encrypt)
			}
			plain, err := c.Open(Query{Signature: sig, Timestamp: "1764000007", Nonce: "n0nce"}, strings.NewReader(body))
			if !errors.Is(err, tt.want) || plain != nil {
				t.Fatalf("Open = %q, %v; want %v", plain, err, tt.want)
			}
			if tt.wantX != nil && !errors.Is(err, tt.wantX) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantX)
			}
			for _, other := range []error{ErrSignature, ErrMalformed, ErrTooLarge} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("err = %v also wraps %v: the status would be ambiguous", err, other)
				}
			}
		})
	}
}

func TestOpenCapitalEncrypt(t *testing.T) {
	c, v := newTestCodec(t)
	tc := v.Callbacks[0]
	q := Query{Signature: tc.MsgSignature, Timestamp: tc.Timestamp, Nonce: tc.Nonce}
	plain, err := c.Open(q, strings.NewReader(`{"Encrypt":"`+tc.Encrypt+`"}`))
	if err != nil || string(plain) != tc.Plaintext {
		t.Fatalf("Open = %s, %v", plain, err)
	}
}

// Exactly MaxBodyBytes is read, one more is too large.
func TestOpenBodyCap(t *testing.T) {
	c, v := newTestCodec(t)
	tc := v.Callbacks[0]
	q := Query{Signature: tc.MsgSignature, Timestamp: tc.Timestamp, Nonce: tc.Nonce}
	body := `{"encrypt":"` + tc.Encrypt + `"}`
	body += strings.Repeat(" ", MaxBodyBytes-len(body))
	if _, err := c.Open(q, strings.NewReader(body)); err != nil {
		t.Fatalf("%d bytes: %v", len(body), err)
	}
	if _, err := c.Open(q, strings.NewReader(body+" ")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d bytes: %v, want ErrTooLarge", len(body)+1, err)
	}
}

func TestNewCodecRefusesBadKey(t *testing.T) {
	if _, err := NewCodec("t", "short"); !errors.Is(err, wxcrypto.ErrConfig) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewCodec("", "kWxPEV2UEDyxWpmPdKC3F6gKwLVJqAjLzqxj5dbtbB9"); !errors.Is(err, wxcrypto.ErrConfig) {
		t.Fatalf("err = %v", err)
	}
}
