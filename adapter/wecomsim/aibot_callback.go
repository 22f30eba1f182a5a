package wecomsim

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/silenceper/wechat/v2/util"
)

// Defaults of AIBotCallback.
const (
	// DefaultPollInterval is the refresh cadence peers observed (~1/s).
	DefaultPollInterval = time.Second
	// DefaultPollWindow is how long WeCom polls, from the user's message.
	DefaultPollWindow = 6 * time.Minute
)

// AIBotCallback plays WeCom's side of an AI bot in API mode: it encrypts and
// signs bodies with receive id "", posts them to the service's callback URL,
// checks each encrypted reply, and polls a stream reply with refresh
// callbacks until it finishes or the poll window closes. Its fields are read,
// never written, so one AIBotCallback may be used concurrently.
type AIBotCallback struct {
	URL            string // the service's callback URL
	Token          string
	EncodingAESKey string // 43 characters
	BotID          string // fills an empty aibotid

	// Sim issues the response_url put into each message; SimURL is where
	// Sim's Handler is served (e.g. an httptest URL). Without Sim messages
	// carry no response_url.
	Sim    *Server
	SimURL string

	// HTTPClient defaults to a client with a 5 s timeout.
	HTTPClient *http.Client
	// Clock stamps timestamps and paces the polling; a fake clock lets a test
	// advance through the window. Defaults to the real clock.
	Clock clockwork.Clock
	// PollInterval defaults to DefaultPollInterval, PollWindow to
	// DefaultPollWindow.
	PollInterval time.Duration
	PollWindow   time.Duration
	// RefreshKeepsMsgID gives refresh callbacks the message's msgid instead of
	// a fresh one; WeCom's samples show fresh ones, and a service must answer
	// refreshes either way.
	RefreshKeepsMsgID bool
}

// AIBotReply is the service's answer to one callback, decrypted.
type AIBotReply struct {
	At         time.Time
	Refresh    bool // the answer to a stream refresh, not to the message
	Status     int
	Empty      bool   // an empty reply ("直接回复空包", or encrypted {})
	Plain      string // the decrypted JSON
	MsgType    string
	StreamID   string
	Content    string // stream content, or text content of a text reply
	Finish     bool
	FeedbackID string
}

// AIBotExchange is one message and WeCom's polling of its answer. Its
// methods are safe for concurrent use while the polling runs.
type AIBotExchange struct {
	MsgID       string
	ResponseURL string // "" when the message carried none

	done chan struct{}

	mu      sync.Mutex
	replies []AIBotReply
	errs    []error
	expired bool
	changed chan struct{}
}

// Post delivers msg and, if the answer is an unfinished stream, polls it to
// the end; it returns once the exchange is over. See Start.
func (c *AIBotCallback) Post(ctx context.Context, msg AIBotBody) *AIBotExchange {
	ex := c.Start(ctx, msg)
	<-ex.Done()
	return ex
}

// WithResponseURL returns msg with c.BotID for an empty AIBotID and, for a
// message (not an event or a refresh) without one, a fresh response_url
// from c.Sim. Posting its result twice repeats the callback byte for byte,
// as WeCom's repeats do; posting a body without response_url twice gives
// each post its own.
func (c *AIBotCallback) WithResponseURL(msg AIBotBody) AIBotBody {
	if msg.AIBotID == "" {
		msg.AIBotID = c.BotID
	}
	isMessage := msg.MsgType != "event" && msg.MsgType != "stream"
	if isMessage && msg.ResponseURL == "" && c.Sim != nil {
		msg.ResponseURL = c.Sim.IssueResponseURL(c.SimURL, msg.AIBotID, msg.MsgID)
	}
	return msg
}

// Start delivers msg in the background and returns at once, after
// WithResponseURL. msg may itself be a refresh (AIBotRefresh), e.g. for a
// stream id the service does not know. If the reply is a stream with
// finish:false, refresh callbacks follow every PollInterval until a reply
// has finish:true or PollWindow since Start has passed. Every reply is
// recorded, and every breach of the protocol is an error in Errors: a bad
// envelope or signature, a nonce other than the callback's, content over
// 20480 bytes, content that shrinks or is rewritten, a changed stream id, a
// refresh answered with something other than a stream, a stream answering
// an event, a non-empty answer to feedback_event. ctx's end stops the
// exchange.
func (c *AIBotCallback) Start(ctx context.Context, msg AIBotBody) *AIBotExchange {
	msg = c.WithResponseURL(msg)
	ex := &AIBotExchange{MsgID: msg.MsgID, ResponseURL: msg.ResponseURL,
		done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(ex.done)
		c.run(ctx, ex, msg)
	}()
	return ex
}

func (c *AIBotCallback) run(ctx context.Context, ex *AIBotExchange, msg AIBotBody) {
	clk := c.clock()
	start := clk.Now()
	first, ok := c.exchange(ctx, ex, msg, msg.MsgType == "stream")
	if !ok {
		return
	}
	switch ev := msg.eventType(); {
	case ev != "" && first.MsgType == "stream":
		ex.fail(fmt.Errorf("%s answered with a stream", ev))
		return
	case ev == "feedback_event" && !first.Empty:
		ex.fail(fmt.Errorf("feedback_event answered with %s; only an empty reply is allowed", first.MsgType))
		return
	}
	if first.MsgType != "stream" || first.Finish {
		return
	}
	if first.StreamID == "" {
		ex.fail(errors.New("the first stream reply has no stream.id"))
		return
	}
	interval, window := c.PollInterval, c.PollWindow
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	if window <= 0 {
		window = DefaultPollWindow
	}
	refresh := AIBotRefresh(msg, first.StreamID)
	if c.RefreshKeepsMsgID {
		refresh.MsgID = msg.MsgID
	}
	for {
		t := clk.NewTimer(interval)
		select {
		case <-t.Chan():
		case <-ctx.Done():
			t.Stop()
			ex.fail(fmt.Errorf("polling stopped: %w", ctx.Err()))
			return
		}
		if clk.Since(start) >= window {
			ex.mu.Lock()
			ex.expired = true
			ex.changedLocked()
			ex.mu.Unlock()
			return
		}
		if !c.RefreshKeepsMsgID {
			refresh.MsgID = "CAIQ" + randomString(18)
		}
		r, ok := c.exchange(ctx, ex, refresh, true)
		if ok && r.Finish {
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// exchange posts one callback and records the reply; ok is false when no
// usable reply came.
func (c *AIBotCallback) exchange(ctx context.Context, ex *AIBotExchange, body AIBotBody, refresh bool) (AIBotReply, bool) {
	what := "message " + body.MsgID
	if refresh {
		what = "refresh " + body.MsgID
	}
	clk := c.clock()
	nonce := randomNonce()
	status, answer, err := c.post(ctx, body.JSON(), strconv.FormatInt(clk.Now().Unix(), 10), nonce)
	reply := AIBotReply{At: clk.Now(), Refresh: refresh, Status: status}
	if err != nil {
		ex.fail(fmt.Errorf("%s: %w", what, err))
		return reply, false
	}
	if status != http.StatusOK {
		ex.fail(fmt.Errorf("%s: status %d: %s", what, status, truncate(answer)))
		return reply, false
	}
	plain, err := c.OpenReply(answer, nonce)
	if err != nil {
		ex.fail(fmt.Errorf("%s: %w", what, err))
		return reply, false
	}
	if err := parseReply(plain, &reply); err != nil {
		ex.fail(fmt.Errorf("%s: %w", what, err))
		return reply, false
	}

	ex.mu.Lock()
	defer ex.mu.Unlock()
	bad := func(format string, args ...any) {
		ex.errs = append(ex.errs, fmt.Errorf("%s: "+format, append([]any{what}, args...)...))
	}
	if refresh && reply.MsgType != "stream" {
		bad("a refresh was answered with %q, not a stream", reply.MsgType)
	}
	if reply.MsgType == "stream" {
		if len(reply.Content) > AIBotMaxContentBytes {
			bad("stream content of %d bytes, over %d", len(reply.Content), AIBotMaxContentBytes)
		}
		if prev, ok := ex.lastStreamLocked(); ok {
			if reply.StreamID != prev.StreamID {
				bad("stream.id %q, was %q", reply.StreamID, prev.StreamID)
			}
			if !strings.HasPrefix(reply.Content, prev.Content) {
				bad("content is not cumulative: %q after %q", truncate([]byte(reply.Content)), truncate([]byte(prev.Content)))
			}
			if prev.Finish {
				bad("a reply after finish:true")
			}
		}
	}
	ex.replies = append(ex.replies, reply)
	ex.changedLocked()
	return reply, true
}

// parseReply fills r from a decrypted reply; nil plain is an empty reply.
func parseReply(plain []byte, r *AIBotReply) error {
	r.Plain = string(plain)
	if len(bytes.TrimSpace(plain)) == 0 || string(bytes.TrimSpace(plain)) == "{}" {
		r.Empty = true
		return nil
	}
	var p aibotReplyBody
	if err := json.Unmarshal(plain, &p); err != nil {
		return fmt.Errorf("reply plaintext is not JSON: %w", err)
	}
	r.MsgType = p.MsgType
	switch {
	case p.MsgType == "stream" || p.MsgType == "stream_with_template_card":
		if p.Stream == nil {
			return fmt.Errorf("%s reply without a stream object", p.MsgType)
		}
		r.StreamID, r.Finish, r.Content = p.Stream.ID, p.Stream.Finish, p.Stream.Content
		if p.Stream.Feedback != nil {
			r.FeedbackID = p.Stream.Feedback.ID
		}
		r.MsgType = "stream"
	case p.MsgType == "text" && p.Text != nil:
		r.Content = p.Text.Content
	case p.MsgType == "":
		return errors.New("reply without msgtype")
	}
	return nil
}

// OpenReply checks the service's reply envelope as WeCom does and returns
// the decrypted plaintext; an empty body is an empty reply (nil, nil).
// callbackNonce is the nonce of the callback being answered, which the
// reply must repeat. The timestamp may be a number or a string.
func (c *AIBotCallback) OpenReply(body []byte, callbackNonce string) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var env struct {
		Encrypt      *string         `json:"encrypt"`
		MsgSignature *string         `json:"msgsignature"`
		Timestamp    json.RawMessage `json:"timestamp"`
		Nonce        *string         `json:"nonce"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("reply is not a JSON envelope: %q", truncate(body))
	}
	var errs []error
	if env.Encrypt == nil {
		errs = append(errs, errors.New("reply envelope has no encrypt"))
	}
	if env.MsgSignature == nil {
		errs = append(errs, errors.New("reply envelope has no msgsignature"))
	}
	if env.Nonce == nil {
		errs = append(errs, errors.New("reply envelope has no nonce"))
	}
	ts := strings.Trim(string(env.Timestamp), `"`)
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		errs = append(errs, fmt.Errorf("reply envelope timestamp %s is not seconds", env.Timestamp))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if *env.Nonce != callbackNonce {
		errs = append(errs, fmt.Errorf("reply nonce %q is not the callback's %q", *env.Nonce, callbackNonce))
	}
	if util.Signature(c.Token, ts, *env.Nonce, *env.Encrypt) != *env.MsgSignature {
		errs = append(errs, errors.New("reply msgsignature does not verify"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	plain, err := decryptAIBot(c.EncodingAESKey, *env.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("decrypt reply: %w", err)
	}
	return plain, nil
}

// decryptAIBot opens random16 | len | msg | receiveid and requires the
// receive id to be "". silenceper's DecryptMsg cannot be used here: it
// refuses any plaintext whose receive id is empty ("msg length too large").
func decryptAIBot(encodingAESKey, encrypt string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("EncodingAESKey is not 43 characters of base64")
	}
	ct, err := base64.StdEncoding.DecodeString(encrypt)
	if err != nil {
		return nil, fmt.Errorf("encrypt is not base64: %w", err)
	}
	if len(ct) == 0 || len(ct)%32 != 0 {
		return nil, fmt.Errorf("ciphertext of %d bytes is not a multiple of 32", len(ct))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > 32 || !bytes.Equal(pt[len(pt)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, errors.New("bad PKCS#7 padding")
	}
	pt = pt[:len(pt)-pad]
	if len(pt) < 20 {
		return nil, errors.New("plaintext too short")
	}
	n := int(binary.BigEndian.Uint32(pt[16:20]))
	if n > len(pt)-20 {
		return nil, fmt.Errorf("message length %d exceeds the plaintext", n)
	}
	if id := pt[20+n:]; len(id) != 0 {
		return nil, fmt.Errorf("receive id %q, want \"\"", id)
	}
	return pt[20 : 20+n], nil
}

// PostRaw encrypts plain as it is, posts it once and returns the service's
// status and body, unchecked: for malformed bodies and repeats.
func (c *AIBotCallback) PostRaw(ctx context.Context, plain []byte) (status int, body []byte, err error) {
	return c.post(ctx, plain, strconv.FormatInt(c.clock().Now().Unix(), 10), randomNonce())
}

// VerifyURL does what the admin console does when the URL is saved: GET
// with msg_signature, timestamp, nonce and the encrypted, percent-encoded
// echostr. A correct service answers 200 with body == echostr exactly.
func (c *AIBotCallback) VerifyURL(ctx context.Context, echostr string) (status int, body string, err error) {
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	ts, nonce := strconv.FormatInt(c.clock().Now().Unix(), 10), randomNonce()
	encrypt, sig, err := c.seal([]byte(echostr), random, ts, nonce)
	if err != nil {
		return 0, "", err
	}
	u, err := c.query(url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {encrypt}})
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", fmt.Errorf("wecomsim: verify request: %w", err)
	}
	status, b, err := c.do(req)
	return status, string(b), err
}

// post sends {"encrypt":…} for plain, signed with timestamp and nonce.
func (c *AIBotCallback) post(ctx context.Context, plain []byte, timestamp, nonce string) (int, []byte, error) {
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	encrypt, sig, err := c.seal(plain, random, timestamp, nonce)
	if err != nil {
		return 0, nil, err
	}
	u, err := c.query(url.Values{"msg_signature": {sig}, "timestamp": {timestamp}, "nonce": {nonce}})
	if err != nil {
		return 0, nil, err
	}
	envelope, _ := json.Marshal(map[string]string{"encrypt": encrypt})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(envelope))
	if err != nil {
		return 0, nil, fmt.Errorf("wecomsim: callback request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req)
}

// seal encrypts plain with receive id "" and the given random prefix, and
// signs it over token, timestamp, nonce and the ciphertext.
func (c *AIBotCallback) seal(plain, random []byte, timestamp, nonce string) (encrypt, signature string, err error) {
	enc, err := util.EncryptMsg(random, plain, "", c.EncodingAESKey)
	if err != nil {
		return "", "", fmt.Errorf("wecomsim: encrypt AI bot callback: %w", err)
	}
	return string(enc), util.Signature(c.Token, timestamp, nonce, string(enc)), nil
}

func (c *AIBotCallback) query(extra url.Values) (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", fmt.Errorf("wecomsim: callback URL: %w", err)
	}
	q := u.Query()
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (c *AIBotCallback) do(req *http.Request) (int, []byte, error) {
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: callbackTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("wecomsim: deliver AI bot callback: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, b, fmt.Errorf("wecomsim: read AI bot callback answer: %w", err)
	}
	return resp.StatusCode, b, nil
}

func (c *AIBotCallback) clock() clockwork.Clock {
	if c.Clock == nil {
		return clockwork.NewRealClock()
	}
	return c.Clock
}

// Done is closed when the exchange is over.
func (ex *AIBotExchange) Done() <-chan struct{} { return ex.done }

// Changed is closed at the next recorded reply, error or expiry.
func (ex *AIBotExchange) Changed() <-chan struct{} {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.changed
}

// Replies returns the replies so far: the message's, then each refresh's.
func (ex *AIBotExchange) Replies() []AIBotReply {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return append([]AIBotReply(nil), ex.replies...)
}

// Errors returns the protocol breaches and failures so far.
func (ex *AIBotExchange) Errors() []error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return append([]error(nil), ex.errs...)
}

// Err joins Errors; nil for a clean exchange.
func (ex *AIBotExchange) Err() error { return errors.Join(ex.Errors()...) }

// Expired reports whether the poll window closed before the stream finished.
func (ex *AIBotExchange) Expired() bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.expired
}

// Last returns the latest reply; false before the first.
func (ex *AIBotExchange) Last() (AIBotReply, bool) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if len(ex.replies) == 0 {
		return AIBotReply{}, false
	}
	return ex.replies[len(ex.replies)-1], true
}

func (ex *AIBotExchange) lastStreamLocked() (AIBotReply, bool) {
	for i := len(ex.replies) - 1; i >= 0; i-- {
		if ex.replies[i].MsgType == "stream" {
			return ex.replies[i], true
		}
	}
	return AIBotReply{}, false
}

func (ex *AIBotExchange) fail(err error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.errs = append(ex.errs, err)
	ex.changedLocked()
}

func (ex *AIBotExchange) changedLocked() {
	close(ex.changed)
	ex.changed = make(chan struct{})
}
