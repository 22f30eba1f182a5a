package wecomsim

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/silenceper/wechat/v2/util"
)

// The §2.9 vectors of AIBOT.md, made with WeCom's official @wecom/crypto.
const (
	vecToken  = "QDG6eKwecombot"
	vecKey    = "kWxPEV2UEDyxWpmPdKC3F6gKwLVJqAjLzqxj5dbtbB9"
	vecRandom = "fedcba9876543210"
	vecPlain  = `{"msgid":"CAIQz7/MjQYY/NGagIOAgAMgl8jK/gI=","aibotid":"AIBOTID","chattype":"single","from":{"userid":"zhangsan"},"msgtype":"stream","stream":{"id":"s-0001"}}`
	vecEnc    = "h7zgTn55k0uAk8B3o5+JLXMZt1rAJ2J0GWGyrvEN6c1ZXKUwiMySZwWLzukOX7E39ZRAXZ/6OIAhLBEWsdn+0ksZuVYqmKUtJCoUmhStfjlsMdUB7hzjfIDV+dx/yQ0d2C79HxzLAnm0QBk91wCkkPLFn52Zg0gggJ6GtLNSPRuaJLKDH3NswpvpZlgY1dY4pJCvSEIqvfynPolPwQB1YX2OPxWm5gEMcYcMcC/NyEHBla8b9eD9YYu/dxKp8HIw"
	vecSig    = "5576818b94eb870f06927d36ac9924b8a2039642"
	vecReply  = `{"encrypt":"h7zgTn55k0uAk8B3o5+JLVy+VDDKoRlzbaAAksEqf5X6GK5uESTl38o695GT0dETgI6Kj260PrbP3cvLHam+ZcvxlCEI89UJPHIPmEKuvusmV4qjq3+h8itldmAx4ZSx","msgsignature":"6294928371a3c812eba9f92d350d0fffe34cd5c8","timestamp":1764000201,"nonce":"9911"}`
	vecReplyP = `{"msgtype":"stream","stream":{"id":"s-0001","finish":false,"content":""}}`
)

func TestAIBotCryptoVectors(t *testing.T) {
	c := &AIBotCallback{Token: vecToken, EncodingAESKey: vecKey}
	refresh := AIBotRefresh(AIBotBody{AIBotID: "AIBOTID", ChatType: "single", From: AIBotFrom{UserID: "zhangsan"}}, "s-0001")
	refresh.MsgID = "CAIQz7/MjQYY/NGagIOAgAMgl8jK/gI="
	if got := string(refresh.JSON()); got != vecPlain {
		t.Fatalf("refresh body\n got %s\nwant %s", got, vecPlain)
	}
	enc, sig, err := c.seal([]byte(vecPlain), []byte(vecRandom), "1764000200", "9911")
	if err != nil || enc != vecEnc || sig != vecSig {
		t.Fatalf("seal: %v\n got %s %s\nwant %s %s", err, enc, sig, vecEnc, vecSig)
	}

	plain, err := c.OpenReply([]byte(vecReply), "9911")
	if err != nil || string(plain) != vecReplyP {
		t.Fatalf("OpenReply of the reply vector: %q, %v", plain, err)
	}
	if _, err := c.OpenReply([]byte(vecReply), "9912"); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("a reply with another callback's nonce passed: %v", err)
	}
	tampered := strings.Replace(vecReply, `"msgsignature":"6`, `"msgsignature":"7`, 1)
	if _, err := c.OpenReply([]byte(tampered), "9911"); err == nil || !strings.Contains(err.Error(), "msgsignature") {
		t.Errorf("a bad signature passed: %v", err)
	}
	asString := strings.Replace(vecReply, `"timestamp":1764000201`, `"timestamp":"1764000201"`, 1)
	if _, err := c.OpenReply([]byte(asString), "9911"); err != nil {
		t.Errorf("a string timestamp was refused: %v", err)
	}
	if _, err := c.OpenReply([]byte(`{"encrypt":"x"}`), "9911"); err == nil {
		t.Error("an envelope without msgsignature, timestamp and nonce passed")
	}

	withID, _ := util.EncryptMsg([]byte(vecRandom), []byte(vecReplyP), "wwcorp", vecKey)
	if _, err := decryptAIBot(vecKey, string(withID)); err == nil || !strings.Contains(err.Error(), "receive id") {
		t.Errorf("a non-empty receive id passed: %v", err)
	}
	// Flip the last ciphertext byte: the padding no longer checks out.
	ct, _ := base64.StdEncoding.DecodeString(vecEnc)
	ct[len(ct)-1] ^= 1
	if _, err := decryptAIBot(vecKey, base64.StdEncoding.EncodeToString(ct)); err == nil {
		t.Error("a corrupted last block passed")
	}
}

// fakeAIBot is the service side, written with silenceper's helpers
// directly: it answers each message with a stream and finishes after
// finishAfter refreshes, unless answer overrides what it says.
type fakeAIBot struct {
	t           *testing.T
	finishAfter int
	// answer, if set, returns the reply plaintext ("" = empty reply) for a
	// callback and the number of refreshes seen before it.
	answer func(in AIBotBody, refreshes int) string
	// nonce, if set, replaces the callback's nonce in the reply.
	nonce string

	mu        sync.Mutex
	bodies    []AIBotBody
	refreshes int
}

func (f *fakeAIBot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sig, ts, nonce := q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce")
	var encrypt string
	if r.Method == http.MethodGet {
		encrypt = q.Get("echostr")
	} else {
		var env struct {
			Encrypt string `json:"encrypt"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &env); err != nil {
			http.Error(w, "bad envelope", http.StatusBadRequest)
			return
		}
		encrypt = env.Encrypt
	}
	if util.Signature(vecToken, ts, nonce, encrypt) != sig {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	plain, err := fakeDecrypt(encrypt)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodGet {
		_, _ = w.Write(plain)
		return
	}
	var in AIBotBody
	if err := json.Unmarshal(plain, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, in)
	if in.MsgType == "stream" {
		f.refreshes++
	}
	n := f.refreshes
	f.mu.Unlock()

	var reply string
	switch {
	case f.answer != nil:
		reply = f.answer(in, n)
	case in.MsgType == "event":
		reply = ""
	default:
		content := strings.Repeat("好", n)
		reply = fmt.Sprintf(`{"msgtype":"stream","stream":{"id":"s-1","finish":%t,"content":%q}}`, n >= f.finishAfter, content)
		if in.MsgType != "stream" {
			reply = `{"msgtype":"stream","stream":{"id":"s-1","finish":false,"content":"","feedback":{"id":"fb-1"}}}`
		}
	}
	if reply == "" {
		return
	}
	if f.nonce != "" {
		nonce = f.nonce
	}
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	enc, err := util.EncryptMsg(random, []byte(reply), "", vecKey)
	if err != nil {
		f.t.Errorf("encrypt reply: %v", err)
		return
	}
	stamp := strconv.FormatInt(time.Now().Unix(), 10)
	out, _ := json.Marshal(map[string]any{"encrypt": string(enc), "msgsignature": util.Signature(vecToken, stamp, nonce, string(enc)),
		"timestamp": json.Number(stamp), "nonce": nonce})
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(out)
}

func (f *fakeAIBot) received() []AIBotBody {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]AIBotBody(nil), f.bodies...)
}

func newAIBotCallback(t *testing.T, f *fakeAIBot) (*AIBotCallback, *clockwork.FakeClock) {
	t.Helper()
	f.t = t
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	clk := clockwork.NewFakeClockAt(time.Date(2025, 12, 1, 9, 0, 0, 0, time.UTC))
	return &AIBotCallback{URL: ts.URL + "/wecom/assistant/callback", Token: vecToken, EncodingAESKey: vecKey,
		BotID: "aibtest", Clock: clk}, clk
}

// drive advances clk each time the exchange's poller waits on it, until the
// exchange is over.
func drive(t *testing.T, clk *clockwork.FakeClock, ex *AIBotExchange, step time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		waitCtx, stop := context.WithCancel(ctx)
		go func() {
			select {
			case <-ex.Done():
				stop()
			case <-waitCtx.Done():
			}
		}()
		err := clk.BlockUntilContext(waitCtx, 1)
		stop()
		if err != nil {
			select {
			case <-ex.Done():
				return
			default:
				t.Fatalf("the exchange neither waited nor ended: %v; replies %+v", err, ex.Replies())
			}
		}
		clk.Advance(step)
	}
}

func TestAIBotPollingStopsOnFinish(t *testing.T) {
	f := &fakeAIBot{finishAfter: 3}
	cb, clk := newAIBotCallback(t, f)
	msg := AIBotText("", "zhangsan", "你好")
	ex := cb.Start(context.Background(), msg)
	drive(t, clk, ex, time.Second)

	if err := ex.Err(); err != nil {
		t.Fatalf("a clean service got errors: %v", err)
	}
	replies := ex.Replies()
	if len(replies) != 4 {
		t.Fatalf("%d replies, want the message's and 3 refreshes': %+v", len(replies), replies)
	}
	if replies[0].Refresh || replies[0].FeedbackID != "fb-1" || replies[0].StreamID != "s-1" {
		t.Errorf("first reply %+v", replies[0])
	}
	finishes := 0
	for i, r := range replies {
		if r.Finish {
			finishes++
		}
		if i > 0 && (!r.Refresh || r.At.Sub(replies[i-1].At) != time.Second) {
			t.Errorf("refresh %d at %v, previous at %v", i, r.At, replies[i-1].At)
		}
	}
	if last, _ := ex.Last(); finishes != 1 || !last.Finish || last.Content != "好好好" || ex.Expired() {
		t.Errorf("%d finishes, last %+v, expired %v", finishes, last, ex.Expired())
	}

	got := f.received()
	if got[0].AIBotID != "aibtest" || got[0].Text.Content != "你好" {
		t.Errorf("message as received: %+v", got[0])
	}
	for _, b := range got[1:] {
		if b.MsgType != "stream" || b.Stream.ID != "s-1" || b.From.UserID != "zhangsan" || b.ResponseURL != "" || b.MsgID == msg.MsgID {
			t.Errorf("refresh as received: %+v", b)
		}
	}
}

func TestAIBotPollingEndsWithTheWindow(t *testing.T) {
	f := &fakeAIBot{finishAfter: 1 << 30}
	cb, clk := newAIBotCallback(t, f)
	cb.PollInterval = 10 * time.Second
	ex := cb.Start(context.Background(), AIBotText("", "zhangsan", "slow"))
	drive(t, clk, ex, 10*time.Second)
	if !ex.Expired() || ex.Err() != nil {
		t.Fatalf("expired %v, errors %v", ex.Expired(), ex.Err())
	}
	// Refreshes at 10 s … 350 s; at 360 s the window has closed.
	if n := len(ex.Replies()); n != 1+35 {
		t.Errorf("%d replies, want 36", n)
	}
}

func TestAIBotExchangeViolations(t *testing.T) {
	stream := func(content string, finish bool) string {
		return fmt.Sprintf(`{"msgtype":"stream","stream":{"id":"s-1","finish":%t,"content":%q}}`, finish, content)
	}
	for _, tc := range []struct {
		name   string
		msg    AIBotBody
		answer func(in AIBotBody, n int) string
		nonce  string
		want   string
	}{
		{name: "nonce", nonce: "1", want: "is not the callback's"},
		{name: "refresh answered with text", want: "not a stream", answer: func(in AIBotBody, n int) string {
			if n == 0 {
				return stream("", false)
			}
			return `{"msgtype":"text","text":{"content":"hi"}}`
		}},
		{name: "content shrinks", want: "not cumulative", answer: func(in AIBotBody, n int) string {
			return stream([]string{"abc", "ab"}[min(n, 1)], n == 1)
		}},
		{name: "content rewritten", want: "not cumulative", answer: func(in AIBotBody, n int) string {
			return stream([]string{"abc", "abd"}[min(n, 1)], n == 1)
		}},
		{name: "too long", want: "over 20480", answer: func(in AIBotBody, n int) string {
			return stream(strings.Repeat("x", AIBotMaxContentBytes+1), true)
		}},
		{name: "stream id changes", want: "stream.id", answer: func(in AIBotBody, n int) string {
			return fmt.Sprintf(`{"msgtype":"stream","stream":{"id":"s-%d","finish":%t,"content":""}}`, n, n == 1)
		}},
		{name: "enter_chat streamed", msg: AIBotEnterChat("", "zhangsan", time.Unix(1764000000, 0)), want: "answered with a stream",
			answer: func(in AIBotBody, n int) string { return stream("welcome", true) }},
		{name: "feedback answered", msg: AIBotFeedback("", "zhangsan", "fb-1", 1, "", nil, time.Unix(1764000000, 0)), want: "only an empty reply",
			answer: func(in AIBotBody, n int) string { return `{"msgtype":"text","text":{"content":"thanks"}}` }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb, clk := newAIBotCallback(t, &fakeAIBot{answer: tc.answer, nonce: tc.nonce})
			msg := tc.msg
			if msg.MsgID == "" {
				msg = AIBotText("", "zhangsan", "hi")
			}
			ex := cb.Start(context.Background(), msg)
			drive(t, clk, ex, time.Second)
			if err := ex.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestAIBotEventsAndRepeats(t *testing.T) {
	f := &fakeAIBot{answer: func(in AIBotBody, n int) string {
		if in.eventType() == "enter_chat" {
			return `{"msgtype":"text","text":{"content":"hello\nI'm RobotA\n"}}`
		}
		if in.MsgType == "event" {
			return ""
		}
		return `{"msgtype":"stream","stream":{"id":"s-1","finish":true,"content":"done"}}`
	}}
	cb, _ := newAIBotCallback(t, f)
	ctx := context.Background()

	ex := cb.Post(ctx, AIBotEnterChat("", "zhangsan", time.Unix(1764000000, 0)))
	if r, _ := ex.Last(); ex.Err() != nil || r.MsgType != "text" || r.Content != "hello\nI'm RobotA\n" {
		t.Errorf("enter_chat: %+v %v", r, ex.Err())
	}
	ex = cb.Post(ctx, AIBotFeedback("", "zhangsan", "fb-1", 2, "wrong", []int{3}, time.Unix(1764000000, 0)))
	if r, _ := ex.Last(); ex.Err() != nil || !r.Empty {
		t.Errorf("feedback: %+v %v", r, ex.Err())
	}

	msg := AIBotGroupText("", "wrkSFfCgAAxxx", "lisi", "RobotA", "hello").Quoting(TextQuote("这是今日的测试情况"))
	first, second := cb.Post(ctx, msg), cb.Post(ctx, msg)
	if first.Err() != nil || second.Err() != nil || first.MsgID != second.MsgID {
		t.Fatalf("repeat: %v %v", first.Err(), second.Err())
	}
	got := f.received()
	g := got[len(got)-1]
	if g.MsgID != msg.MsgID || g.ChatType != "group" || g.ChatID != "wrkSFfCgAAxxx" || g.Text.Content != "@RobotA hello" ||
		g.Quote == nil || g.Quote.Text.Content != "这是今日的测试情况" {
		t.Errorf("group text with quote as received: %+v", g)
	}
	if fb := got[1].Event["feedback_event"].(map[string]any); fb["id"] != "fb-1" || fb["type"] != float64(2) {
		t.Errorf("feedback event as received: %+v", got[1].Event)
	}

	// A refresh posted on its own, for a stream the service never made.
	ex = cb.Post(ctx, AIBotRefresh(AIBotText("aibtest", "zhangsan", ""), "s-unknown"))
	if r, _ := ex.Last(); ex.Err() != nil || !r.Refresh || !r.Finish || len(ex.Replies()) != 1 {
		t.Errorf("unknown stream: %+v %v", ex.Replies(), ex.Err())
	}
}

func TestAIBotRepeatWithResponseURL(t *testing.T) {
	sim := New(Options{})
	f := &fakeAIBot{answer: func(AIBotBody, int) string { return "" }}
	cb, _ := newAIBotCallback(t, f)
	cb.Sim, cb.SimURL = sim, "http://wecomsim.test"
	msg := cb.WithResponseURL(AIBotVoice("", "zhangsan", "明天天气怎么样"))
	cb.Post(context.Background(), msg)
	cb.Post(context.Background(), msg)
	plain := AIBotVoice("", "zhangsan", "")
	cb.Post(context.Background(), plain)
	cb.Post(context.Background(), plain)
	got := f.received()
	if string(got[0].JSON()) != string(got[1].JSON()) || got[0].Voice.Content != "明天天气怎么样" || got[0].AIBotID != "aibtest" {
		t.Errorf("a repeat differs: %s vs %s", got[0].JSON(), got[1].JSON())
	}
	if got[2].MsgID != got[3].MsgID || got[2].ResponseURL == got[3].ResponseURL {
		t.Errorf("posts without response_url share one: %q", got[2].ResponseURL)
	}
}

func TestAIBotVerifyURL(t *testing.T) {
	cb, _ := newAIBotCallback(t, &fakeAIBot{})
	// An echostr with every character that needs percent-encoding.
	const echo = "a+b/c=d 5927782489442352469"
	status, body, err := cb.VerifyURL(context.Background(), echo)
	if err != nil || status != http.StatusOK || body != echo {
		t.Fatalf("VerifyURL: %d %q %v", status, body, err)
	}
	cb.Token = "wrong"
	if status, _, _ := cb.VerifyURL(context.Background(), echo); status != http.StatusForbidden {
		t.Fatalf("a wrong token was accepted: %d", status)
	}
}

func TestAIBotResponseURL(t *testing.T) {
	clk := newClock()
	sim := New(Options{Now: clk.Now})
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)
	f := &fakeAIBot{answer: func(AIBotBody, int) string { return "" }}
	cb, _ := newAIBotCallback(t, f)
	cb.Sim, cb.SimURL = sim, simSrv.URL+"/wecom"

	ex := cb.Post(context.Background(), AIBotText("", "zhangsan", "hi"))
	got := f.received()
	if ex.Err() != nil || got[0].ResponseURL == "" || got[0].ResponseURL != ex.ResponseURL ||
		!strings.HasPrefix(ex.ResponseURL, simSrv.URL+"/wecom"+AIBotResponsePath+"?response_code=") {
		t.Fatalf("response_url %q (%v)", ex.ResponseURL, ex.Err())
	}

	post := func(u, body string) int {
		t.Helper()
		resp, err := http.Post(u, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ErrCode int    `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		if out.ErrCode == 0 && out.ErrMsg != "ok" {
			t.Errorf("errmsg %q with errcode 0", out.ErrMsg)
		}
		return out.ErrCode
	}
	answer := `{"msgtype":"markdown","markdown":{"content":"**the rest**","feedback":{"id":"fb-9"}}}`
	if code := post(ex.ResponseURL, answer); code != 0 {
		t.Fatalf("first use: errcode %d", code)
	}
	if code := post(ex.ResponseURL, answer); code != AIBotErrResponseCodeUsed {
		t.Errorf("second use: errcode %d", code)
	}
	rs := sim.AIBotResponses(ex.MsgID)
	if len(rs) != 2 || rs[0].Content != "**the rest**" || rs[0].FeedbackID != "fb-9" || rs[0].BotID != "aibtest" || rs[0].ErrCode != 0 || rs[1].ErrCode != AIBotErrResponseCodeUsed {
		t.Errorf("recorded %+v", rs)
	}

	stale := sim.IssueResponseURL(simSrv.URL, "aibtest", "m2")
	clk.Advance(time.Hour + time.Second)
	if code := post(stale, answer); code != AIBotErrResponseCodeStale {
		t.Errorf("after an hour: errcode %d", code)
	}
	long := sim.IssueResponseURL(simSrv.URL, "aibtest", "m3")
	body, _ := json.Marshal(map[string]any{"msgtype": "markdown", "markdown": map[string]string{"content": strings.Repeat("长", 6827) + "x"}})
	if code := post(long, string(body)); code != AIBotErrContentTooLong {
		t.Errorf("20482 bytes: errcode %d", code)
	}
	if code := post(simSrv.URL+AIBotResponsePath+"?response_code=nope", answer); code != AIBotErrResponseCodeBad {
		t.Errorf("unknown code: errcode %d", code)
	}
}

// fakeDecrypt is the service's decryption, kept apart from the simulator's:
// AES-256-CBC with IV = key[:16], then random16 | len | msg | "".
func fakeDecrypt(encrypt string) ([]byte, error) {
	key, _ := base64.StdEncoding.DecodeString(vecKey + "=")
	ct, err := base64.StdEncoding.DecodeString(encrypt)
	if err != nil || len(ct)%aes.BlockSize != 0 || len(ct) == 0 {
		return nil, fmt.Errorf("bad ciphertext")
	}
	block, _ := aes.NewCipher(key)
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(pt, ct)
	pt = pt[:len(pt)-int(pt[len(pt)-1])]
	n := int(binary.BigEndian.Uint32(pt[16:20]))
	if len(pt) != 20+n {
		return nil, fmt.Errorf("receive id %q is not empty", pt[20+n:])
	}
	return pt[20:], nil
}

// FuzzAIBotOpenReply feeds the reply check what a broken service might
// answer: it must refuse or accept, never panic.
func FuzzAIBotOpenReply(f *testing.F) {
	f.Add([]byte(vecReply), "9911")
	f.Add([]byte(`{"encrypt":"","msgsignature":"","timestamp":"1","nonce":"9911"}`), "9911")
	f.Add([]byte(`{"encrypt":"AAAA","msgsignature":"x","timestamp":1,"nonce":"n"}`), "n")
	c := &AIBotCallback{Token: vecToken, EncodingAESKey: vecKey}
	f.Fuzz(func(t *testing.T, body []byte, nonce string) {
		_, _ = c.OpenReply(body, nonce)
		var env struct {
			Encrypt string `json:"encrypt"`
		}
		if json.Unmarshal(body, &env) == nil {
			_, _ = decryptAIBot(vecKey, env.Encrypt)
		}
	})
}
