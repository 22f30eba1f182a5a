package aibot

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// MaxBodyBytes is the largest callback body Open reads. WeCom's bodies are a
// few KiB; the cap only stops a client from making the service buffer more.
const MaxBodyBytes = 1 << 20

// Query holds the parameters of a callback request's URL.
type Query struct {
	Signature string
	Timestamp string
	Nonce     string
	EchoStr   string // the URL check (GET) only
}

// ParseQuery reads a callback URL's raw query. It accepts the signature
// under msg_signature, and also under msgsignature or signature as WeCom's
// own plugin does. An echostr is base64, which has no space, so a space in
// it is a "+" that came unencoded and was decoded as a space; it is put back.
// Missing values or a timestamp that is not a number wrap ErrMalformed; whether
// echostr is required is the caller's (GET) business.
func ParseQuery(raw string) (Query, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return Query{}, fmt.Errorf("%w: query: %v", ErrMalformed, err)
	}
	q := Query{
		Signature: firstNonEmpty(v.Get("msg_signature"), firstNonEmpty(v.Get("msgsignature"), v.Get("signature"))),
		Timestamp: v.Get("timestamp"),
		Nonce:     v.Get("nonce"),
		EchoStr:   strings.ReplaceAll(v.Get("echostr"), " ", "+"),
	}
	if q.Signature == "" || q.Timestamp == "" || q.Nonce == "" {
		return Query{}, fmt.Errorf("%w: missing msg_signature, timestamp or nonce", ErrMalformed)
	}
	if _, err := strconv.ParseInt(q.Timestamp, 10, 64); err != nil {
		return Query{}, fmt.Errorf("%w: timestamp is not a number", ErrMalformed)
	}
	return q, nil
}

// Codec verifies, opens and seals the callbacks of one AI bot in API mode.
// It is immutable after NewCodec and safe for concurrent use.
type Codec struct {
	cipher *wxcrypto.Cipher
	// random is where Seal's 16-byte random prefix comes from; nil means
	// crypto/rand. Tests set it to reproduce the vectors.
	random io.Reader
}

// NewCodec builds a Codec from the bot's Token and EncodingAESKey. The
// AI bot's receive id is always "".
func NewCodec(token, encodingAESKey string) (*Codec, error) {
	c, err := wxcrypto.New(token, encodingAESKey, "")
	if err != nil {
		return nil, fmt.Errorf("aibot: %w", err)
	}
	return &Codec{cipher: c}, nil
}

// VerifyURL answers the URL check (GET): it verifies the signature over
// q.EchoStr and returns the decrypted echostr, to be written as the whole
// response body (no quotes, no newline).
func (c *Codec) VerifyURL(q Query) ([]byte, error) {
	if q.EchoStr == "" {
		return nil, fmt.Errorf("%w: missing echostr", ErrMalformed)
	}
	return c.open(q, q.EchoStr)
}

// Open reads a message callback's POST body (at most MaxBodyBytes, else
// ErrTooLarge), takes the ciphertext from {"encrypt":…} (or "Encrypt"),
// verifies msg_signature over token, timestamp, nonce and ciphertext
// (ErrSignature), and decrypts it (ErrMalformed, also for a plaintext whose
// receive id is not "" or whose padding is wrong). The result is the JSON
// for ParseMessage.
func (c *Codec) Open(q Query, body io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(body, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %v", ErrMalformed, err)
	}
	if len(raw) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxBodyBytes)
	}
	var env struct {
		Encrypt  string `json:"encrypt"`
		Encrypt2 string `json:"Encrypt"`
	}
	// encoding/json matches keys case-insensitively and prefers the exact
	// match, so each field gets its own spelling.
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	encrypt := firstNonEmpty(env.Encrypt, env.Encrypt2)
	if encrypt == "" {
		return nil, fmt.Errorf("%w: body without encrypt", ErrMalformed)
	}
	return c.open(q, encrypt)
}

func (c *Codec) open(q Query, encrypt string) ([]byte, error) {
	if err := c.cipher.Verify(q.Signature, q.Timestamp, q.Nonce, encrypt); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	plain, err := c.cipher.Decrypt(encrypt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return plain, nil
}

// envelope is the passive reply as WeCom documents it: timestamp a number.
type envelope struct {
	Encrypt      string `json:"encrypt"`
	MsgSignature string `json:"msgsignature"`
	Timestamp    int64  `json:"timestamp"`
	Nonce        string `json:"nonce"`
}

// Seal turns a reply into the HTTP response body of the callback whose nonce
// is given: {"encrypt","msgsignature","timestamp","nonce"}, timestamp now in
// Unix seconds, nonce the callback's (WeCom requires it), the signature over
// token, that timestamp, nonce and encrypt. The empty Reply seals to an
// empty body (nil): see Reply.
func (c *Codec) Seal(r Reply, nonce string, now time.Time) ([]byte, error) {
	if r.IsEmpty() {
		return nil, nil
	}
	plain, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	var random [16]byte
	src := c.random
	if src == nil {
		src = rand.Reader
	}
	if _, err := io.ReadFull(src, random[:]); err != nil {
		return nil, fmt.Errorf("aibot: random prefix: %w", err)
	}
	return c.seal(plain, now.Unix(), nonce, random)
}

func (c *Codec) seal(plain []byte, ts int64, nonce string, random [16]byte) ([]byte, error) {
	encrypt := c.cipher.EncryptWithRandom(random, plain)
	env := envelope{
		Encrypt:      encrypt,
		MsgSignature: c.cipher.Signature(strconv.FormatInt(ts, 10), nonce, encrypt),
		Timestamp:    ts,
		Nonce:        nonce,
	}
	return marshal(env)
}

// marshal is json.Marshal without HTML escaping, so "<think>" and "&" in an
// answer keep their size, and without the trailing newline of an Encoder.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("aibot: encode: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
