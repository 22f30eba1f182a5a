package adapter

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

const (
	cbCorp  = "wwcallbackcorp01"
	cbAgent = 1000002
	cbToken = "cbtoken"
)

// fakeCompleter answers with a function.
type fakeCompleter struct {
	fn func(msgs []llm.Message) (string, error)
}

var _ Completer = fakeCompleter{}

func (f fakeCompleter) Complete(_ context.Context, msgs []llm.Message) (string, error) {
	return f.fn(msgs)
}

// failingStore is the real storage except that storing a message fails, as
// with a locked or full database.
type failingStore struct {
	*storage.DB
	mu   sync.Mutex
	fail bool
}

func (s *failingStore) InsertMessage(ctx context.Context, m *storage.Message) (bool, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return false, errors.New("database or disk is full")
	}
	return s.DB.InsertMessage(ctx, m)
}

type callbackEnv struct {
	t      *testing.T
	aesKey string
	cipher *wxcrypto.Cipher
	store  *failingStore
	sim    *wecomsim.Server
	srv    *httptest.Server
	logs   *bytes.Buffer
}

func newCallbackEnv(t *testing.T) *callbackEnv {
	t.Helper()
	e := &callbackEnv{t: t, aesKey: wecomsim.NewEncodingAESKey(), logs: &bytes.Buffer{}}
	var err error
	if e.cipher, err = wxcrypto.New(cbToken, e.aesKey, cbCorp); err != nil {
		t.Fatal(err)
	}
	e.sim = wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: cbCorp, AgentID: cbAgent, Secret: "s"}}})
	simSrv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(simSrv.Close)
	e.store = &failingStore{DB: openTestDB(t)}
	var logMu sync.Mutex
	app, err := New(Options{
		WeCom:    WeComConfig{APIBase: simSrv.URL, TokenRefreshBefore: config.Duration(5 * time.Minute)},
		Bots:     []BotConfig{{Name: "helpdesk", CorpID: cbCorp, AgentID: cbAgent, Secret: "s", Token: cbToken, EncodingAESKey: e.aesKey}},
		Store:    e.store,
		Pipeline: PipelineConfig{Replies: Replies{Empty: "please write something"}},
		LLM: fakeCompleter{fn: func(msgs []llm.Message) (string, error) {
			return "echo " + msgs[len(msgs)-1].Content, nil
		}},
		Log: slog.New(slog.NewTextHandler(lockedWriter{&logMu, e.logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	gin.SetMode(gin.TestMode)
	engine := gin.New()
	app.Routes(engine)
	e.srv = httptest.NewServer(engine)
	t.Cleanup(e.srv.Close)
	return e
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// rawEncrypt encrypts an arbitrary plaintext with the bot's key, for inputs
// that a correct encoder cannot produce.
func (e *callbackEnv) rawEncrypt(plain []byte) string {
	key, _ := base64.StdEncoding.DecodeString(e.aesKey + "=")
	block, _ := aes.NewCipher(key)
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

// padded builds random|len|msg|receiveID with PKCS#7 padding to 32 bytes.
func padded(lenField uint32, msg, receiveID string) []byte {
	var b bytes.Buffer
	b.WriteString("0123456789abcdef")
	binary.Write(&b, binary.BigEndian, lenField)
	b.WriteString(msg)
	b.WriteString(receiveID)
	n := 32 - b.Len()%32
	b.Write(bytes.Repeat([]byte{byte(n)}, n))
	return b.Bytes()
}

func envelope(encrypt string) string {
	return "<xml><ToUserName><![CDATA[" + cbCorp + "]]></ToUserName><Encrypt><![CDATA[" + encrypt +
		"]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
}

// post sends a signed callback whose Encrypt is encrypt.
func (e *callbackEnv) post(encrypt string) (int, string) {
	ts, nonce := "1764000000", "n0nce"
	q := url.Values{"msg_signature": {e.cipher.Signature(ts, nonce, encrypt)}, "timestamp": {ts}, "nonce": {nonce}}
	return e.do("POST", "/wecom/helpdesk/callback?"+q.Encode(), envelope(encrypt))
}

func (e *callbackEnv) do(method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func textXML(user, content string, msgID int64) string {
	return string(wecomsim.TextXML(cbCorp, user, content, msgID, 1764000000, cbAgent))
}

func (e *callbackEnv) storedMessages() int {
	n := 0
	for id := int64(1); id < 100; id++ {
		if _, err := e.store.GetMessage(context.Background(), id); err == nil {
			n++
		}
	}
	return n
}

func TestHostileCallbacksAreRefusedAndChangeNothing(t *testing.T) {
	e := newCallbackEnv(t)
	valid := textXML("zhangsan", "hi", 1)
	otherCorp, _ := wxcrypto.New(cbToken, e.aesKey, "wwsomeothercorp")
	goodEnc, _ := e.cipher.Encrypt([]byte(valid))
	raw, _ := base64.StdEncoding.DecodeString(goodEnc)
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)-1] ^= 0x5a
	sign := func(enc string) string {
		q := url.Values{"msg_signature": {e.cipher.Signature("1", "n", enc)}, "timestamp": {"1"}, "nonce": {"n"}}
		return q.Encode()
	}
	otherToken, _ := wxcrypto.New("anothertoken", e.aesKey, cbCorp)
	cases := []struct {
		name    string
		method  string
		path    string
		body    string
		encrypt string // when set: a correctly signed POST of this Encrypt
		status  int
	}{
		{name: "bad signature", method: "POST", path: "/wecom/helpdesk/callback?msg_signature=deadbeef&timestamp=1&nonce=n", body: envelope(goodEnc), status: 403},
		{name: "signature made with another token", method: "POST", path: "/wecom/helpdesk/callback?" + url.Values{"msg_signature": {otherToken.Signature("1", "n", goodEnc)}, "timestamp": {"1"}, "nonce": {"n"}}.Encode(), body: envelope(goodEnc), status: 403},
		{name: "missing query parameters", method: "POST", path: "/wecom/helpdesk/callback?timestamp=1", body: envelope(goodEnc), status: 400},
		{name: "timestamp not a number", method: "POST", path: "/wecom/helpdesk/callback?msg_signature=a&timestamp=soon&nonce=n", body: envelope(goodEnc), status: 400},
		{name: "echostr not base64", method: "GET", path: "/wecom/helpdesk/callback?echostr=%25%25%25&" + sign("%%%"), status: 400},
		{name: "echostr not whole blocks", method: "GET", path: "/wecom/helpdesk/callback?echostr=" + url.QueryEscape(base64.StdEncoding.EncodeToString(raw[:40])) + "&" + sign(base64.StdEncoding.EncodeToString(raw[:40])), status: 400},
		{name: "Encrypt not base64", encrypt: "!!!not base64!!!", status: 400},
		{name: "Encrypt not whole blocks", encrypt: base64.StdEncoding.EncodeToString(raw[:len(raw)-7]), status: 400},
		{name: "bad padding", encrypt: base64.StdEncoding.EncodeToString(tampered), status: 400},
		{name: "receive id of another corp", encrypt: mustEncrypt(t, otherCorp, valid), status: 403},
		{name: "length field larger than the data", encrypt: e.rawEncrypt(padded(5000, valid, cbCorp)), status: 400},
		{name: "length field 0xFFFFFFFF", encrypt: e.rawEncrypt(padded(0xFFFFFFFF, valid, cbCorp)), status: 400},
		{name: "malformed XML", encrypt: mustEncrypt(t, e.cipher, "<xml><MsgType>text</MsgType"), status: 400},
		{name: "truncated XML", encrypt: mustEncrypt(t, e.cipher, valid[:len(valid)/2]), status: 400},
		{name: "unexpected MsgType", encrypt: mustEncrypt(t, e.cipher, strings.Replace(valid, "[text]", "[hologram]", 1)), status: 400},
		{name: "malformed envelope", method: "POST", path: "/wecom/helpdesk/callback?msg_signature=a&timestamp=1&nonce=n", body: "<xml><Encrypt>", status: 400},
		{name: "body over 1 MiB", method: "POST", path: "/wecom/helpdesk/callback?msg_signature=a&timestamp=1&nonce=n", body: strings.Repeat("<", 1<<20+10), status: 413},
		{name: "unknown bot", method: "POST", path: "/wecom/nobody/callback?msg_signature=a&timestamp=1&nonce=n", body: envelope(goodEnc), status: 404},
		{name: "unknown bot verification", method: "GET", path: "/wecom/nobody/callback?echostr=x&msg_signature=a&timestamp=1&nonce=n", status: 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var status int
			var body string
			if c.encrypt != "" {
				status, body = e.post(c.encrypt)
			} else {
				status, body = e.do(c.method, c.path, c.body)
			}
			if status != c.status {
				t.Fatalf("status %d (%q), want %d", status, body, c.status)
			}
			if body == "" || len(body) > 100 {
				t.Errorf("want a short reason, got %q", body)
			}
		})
	}
	if n := e.storedMessages(); n != 0 {
		t.Fatalf("%d messages stored from hostile requests", n)
	}
	if !strings.Contains(e.logs.String(), "callback refused") {
		t.Error("refusals are not logged")
	}

	// A storm of garbage, then the server still answers a valid message.
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Go(func() {
			garbage := strings.Repeat(fmt.Sprintf("%x", i*7919), i%50+1)
			if i%2 == 0 {
				e.do("GET", "/wecom/helpdesk/callback?echostr="+garbage+"&msg_signature="+garbage+"&timestamp=1&nonce=n", "")
			} else {
				e.post(garbage)
			}
		})
	}
	wg.Wait()
	if n := e.storedMessages(); n != 0 {
		t.Fatalf("%d messages stored from the storm", n)
	}
	odd := `张三<&>"'\x` // odd characters in a user id
	if status, body := e.post(mustEncrypt(t, e.cipher, textXML(odd, "still there?", 42))); status != 200 || body != "" {
		t.Fatalf("valid message after the storm: %d %q", status, body)
	}
	if status, _ := e.post(mustEncrypt(t, e.cipher, textXML("empty", "", 43))); status != 200 {
		t.Fatalf("empty content: %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent, err := e.sim.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatalf("%v; delivered %v\n%s", err, e.sim.Delivered(), e.logs.String()[max(0, e.logs.Len()-3000):])
	}
	got := map[string]string{}
	for _, s := range sent {
		got[s.ToUser] = s.Content
	}
	if got[odd] != "echo still there?" || got["empty"] != "please write something" {
		t.Fatalf("answers: %q", got)
	}
}

func mustEncrypt(t *testing.T, c *wxcrypto.Cipher, plain string) string {
	t.Helper()
	enc, err := c.Encrypt([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// A message that cannot be stored is answered 500, so that WeCom retries it
// later; a 200 would lose it.
func TestCallbackAnswers500WhenTheMessageCannotBeStored(t *testing.T) {
	e := newCallbackEnv(t)
	enc := mustEncrypt(t, e.cipher, textXML("lisi", "are you there", 7))
	e.store.mu.Lock()
	e.store.fail = true
	e.store.mu.Unlock()
	if status, _ := e.post(enc); status != http.StatusInternalServerError {
		t.Fatalf("status %d with a full database, want 500", status)
	}
	e.store.mu.Lock()
	e.store.fail = false
	e.store.mu.Unlock()
	// WeCom's retry of the same message, once the database is back.
	if status, _ := e.post(enc); status != 200 {
		t.Fatalf("retry: %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent, err := e.sim.WaitDelivered(ctx, 1)
	if err != nil || sent[0].Content != "echo are you there" {
		t.Fatalf("answer after the retry: %v %v", sent, err)
	}
}
