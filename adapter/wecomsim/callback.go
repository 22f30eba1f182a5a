package wecomsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// callbackTimeout is how long WeCom waits for our answer before it counts
// the callback as failed and retries.
const callbackTimeout = 5 * time.Second

const maxAnswerBytes = 1 << 20

// Callback plays WeCom's side of an app's callback: it encrypts, signs and
// delivers messages to the URL configured in the admin console. Its fields
// are read, never written, so one Callback may be used concurrently.
type Callback struct {
	URL            string // full callback URL, e.g. http://127.0.0.1:8080/wecom/helpdesk/callback
	Token          string
	EncodingAESKey string // 43 characters
	CorpID         string // the receive id inside every encrypted message

	// HTTPClient defaults to a client with WeCom's 5s timeout.
	HTTPClient *http.Client
	// Now stamps the timestamp parameter. Defaults to time.Now.
	Now func() time.Time
}

// Attempt is the outcome of one delivery of a callback.
type Attempt struct {
	Status int
	Body   string
	Err    error
}

// NewEncodingAESKey returns a fresh 43-character EncodingAESKey, as the
// admin console's "random" button makes.
func NewEncodingAESKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

// Post delivers one message as WeCom does: plainXML (see TextXML and friends)
// is encrypted with a fresh random prefix, wrapped in the
// <xml><ToUserName/><Encrypt/><AgentID/></xml> envelope and POSTed with
// msg_signature, timestamp and nonce. It returns the HTTP status and body of
// our service's answer; err is set only when no answer arrived.
func (c *Callback) Post(ctx context.Context, plainXML []byte) (status int, body string, err error) {
	encrypt, err := c.encrypt(plainXML)
	if err != nil {
		return 0, "", err
	}
	var head struct {
		AgentID string `xml:"AgentID"`
	}
	_ = xml.Unmarshal(plainXML, &head) // an unparsable message still goes out, with an empty AgentID
	envelope := fmt.Sprintf("<xml><ToUserName>%s</ToUserName><Encrypt>%s</Encrypt><AgentID>%s</AgentID></xml>",
		cdata(c.CorpID), cdata(encrypt), cdata(head.AgentID))

	u, err := c.signedURL(encrypt, nil)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte(envelope)))
	if err != nil {
		return 0, "", fmt.Errorf("wecomsim: callback request: %w", err)
	}
	req.Header.Set("Content-Type", "text/xml")
	return c.do(req)
}

// PostWithRetry delivers plainXML 1+retries times, as WeCom does when it did
// not get our 200 in time: every retry carries the same plaintext (same
// MsgId) but is encrypted afresh with a new timestamp and nonce, so the
// service must dedupe on the message, not on the envelope. Real retries come
// about 5s apart; these follow each other at once, which is the harder case.
// Transport errors are recorded in the attempt and do not stop the retries;
// only ctx's end does, and its error is returned.
func (c *Callback) PostWithRetry(ctx context.Context, plainXML []byte, retries int) ([]Attempt, error) {
	attempts := make([]Attempt, 0, retries+1)
	for i := 0; i <= retries; i++ {
		if err := ctx.Err(); err != nil {
			return attempts, err
		}
		status, body, err := c.Post(ctx, plainXML)
		attempts = append(attempts, Attempt{Status: status, Body: body, Err: err})
	}
	return attempts, nil
}

// VerifyURL does what the admin console does when the callback URL is saved:
// GET with msg_signature, timestamp, nonce and the encrypted echostr. A
// correct service answers status 200 with body == echostr exactly.
func (c *Callback) VerifyURL(ctx context.Context, echostr string) (status int, body string, err error) {
	encrypt, err := c.encrypt([]byte(echostr))
	if err != nil {
		return 0, "", err
	}
	u, err := c.signedURL(encrypt, url.Values{"echostr": {encrypt}})
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", fmt.Errorf("wecomsim: verify request: %w", err)
	}
	return c.do(req)
}

func (c *Callback) encrypt(plain []byte) (string, error) {
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	enc, err := util.EncryptMsg(random, plain, c.CorpID, c.EncodingAESKey)
	if err != nil {
		return "", fmt.Errorf("wecomsim: encrypt callback: %w", err)
	}
	return string(enc), nil
}

// signedURL adds msg_signature, timestamp and nonce (and extra) to c.URL,
// keeping any query the URL already has.
func (c *Callback) signedURL(encrypt string, extra url.Values) (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", fmt.Errorf("wecomsim: callback URL: %w", err)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	timestamp := strconv.FormatInt(now().Unix(), 10)
	nonce := randomNonce()
	q := u.Query()
	for k, v := range extra {
		q[k] = v
	}
	q.Set("msg_signature", util.Signature(c.Token, timestamp, nonce, encrypt))
	q.Set("timestamp", timestamp)
	q.Set("nonce", nonce)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (c *Callback) do(req *http.Request) (int, string, error) {
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: callbackTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("wecomsim: deliver callback: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, string(b), fmt.Errorf("wecomsim: read callback answer: %w", err)
	}
	return resp.StatusCode, string(b), nil
}

// randomNonce returns a decimal nonce like WeCom's ("1372623149").
func randomNonce() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
	return strconv.FormatInt(n.Int64()+1_000_000_000, 10)
}
