package wecomsim

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/silenceper/wechat/v2/util"
)

const cbToken = "QDG6eK"

// receiver is the service's side of the callback, written independently
// with silenceper's helpers so the simulator is checked against them.
type receiver struct {
	key    string
	mu     sync.Mutex
	plains [][]byte
	query  []map[string]string
	encs   []string
}

type envelope struct {
	ToUserName string `xml:"ToUserName"`
	Encrypt    string `xml:"Encrypt"`
	AgentID    string `xml:"AgentID"`
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sig, ts, nonce := q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce")
	var encrypt string
	switch r.Method {
	case http.MethodGet:
		encrypt = q.Get("echostr")
	case http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		var env envelope
		if err := xml.Unmarshal(body, &env); err != nil {
			http.Error(w, "bad envelope", http.StatusBadRequest)
			return
		}
		if env.ToUserName != corpID || env.AgentID != strconv.Itoa(agentID) {
			http.Error(w, "bad envelope header: "+string(body), http.StatusBadRequest)
			return
		}
		encrypt = env.Encrypt
	}
	if util.Signature(cbToken, ts, nonce, encrypt) != sig {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	_, plain, err := util.DecryptMsg(corpID, encrypt, rc.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodGet {
		_, _ = w.Write(plain)
		return
	}
	rc.mu.Lock()
	rc.plains = append(rc.plains, plain)
	rc.query = append(rc.query, map[string]string{"timestamp": ts, "nonce": nonce})
	rc.encs = append(rc.encs, encrypt)
	rc.mu.Unlock()
}

func newCallback(t *testing.T) (*Callback, *receiver, *clock) {
	t.Helper()
	key := NewEncodingAESKey()
	if len(key) != 43 {
		t.Fatalf("EncodingAESKey has %d characters", len(key))
	}
	rc := &receiver{key: key}
	ts := httptest.NewServer(rc)
	t.Cleanup(ts.Close)
	clk := newClock()
	return &Callback{URL: ts.URL + "/wecom/helpdesk/callback", Token: cbToken, EncodingAESKey: key, CorpID: corpID, Now: clk.Now}, rc, clk
}

type plainMsg struct {
	ToUserName   string
	FromUserName string
	CreateTime   int64
	MsgType      string
	Content      string
	MsgId        int64
	AgentID      int64
	Event        string
	MediaId      string
	PicUrl       string
	Format       string
	ThumbMediaId string
}

func parse(t *testing.T, b []byte) plainMsg {
	t.Helper()
	var m plainMsg
	if err := xml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	return m
}

func TestCallbackPost(t *testing.T) {
	cb, rc, clk := newCallback(t)
	content := "你好 <b> & ]]> tricky"
	status, body, err := cb.Post(context.Background(), TextXML(corpID, "zhangsan", content, 7234567890123456789, 1740819600, agentID))
	if err != nil || status != http.StatusOK || body != "" {
		t.Fatalf("Post: %d %q %v", status, body, err)
	}
	got := parse(t, rc.plains[0])
	want := plainMsg{ToUserName: corpID, FromUserName: "zhangsan", CreateTime: 1740819600, MsgType: "text",
		Content: content, MsgId: 7234567890123456789, AgentID: agentID}
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if ts := rc.query[0]["timestamp"]; ts != strconv.FormatInt(clk.Now().Unix(), 10) {
		t.Errorf("timestamp %s does not come from the clock", ts)
	}
}

func TestCallbackVerifyURL(t *testing.T) {
	cb, _, _ := newCallback(t)
	const echo = "5927782489442352469"
	status, body, err := cb.VerifyURL(context.Background(), echo)
	if err != nil || status != http.StatusOK || body != echo {
		t.Fatalf("VerifyURL: %d %q %v", status, body, err)
	}

	cb.Token = "wrong"
	if status, _, _ := cb.VerifyURL(context.Background(), echo); status != http.StatusForbidden {
		t.Fatalf("a wrong token was accepted: %d", status)
	}
}

func TestCallbackPostWithRetry(t *testing.T) {
	cb, rc, _ := newCallback(t)
	plain := TextXML(corpID, "zhangsan", "hello", 42, 1740819600, agentID)
	attempts, err := cb.PostWithRetry(context.Background(), plain, 3)
	if err != nil || len(attempts) != 4 {
		t.Fatalf("%d attempts, %v", len(attempts), err)
	}
	for i, a := range attempts {
		if a.Err != nil || a.Status != http.StatusOK {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	nonces, encs := map[string]bool{}, map[string]bool{}
	for i, p := range rc.plains {
		if string(p) != string(plain) {
			t.Errorf("retry %d carries a different plaintext", i)
		}
		nonces[rc.query[i]["nonce"]] = true
		encs[rc.encs[i]] = true
	}
	if len(nonces) != 4 || len(encs) != 4 {
		t.Errorf("retries reuse nonces (%d distinct) or ciphertexts (%d distinct)", len(nonces), len(encs))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if attempts, err := cb.PostWithRetry(ctx, plain, 3); err == nil || len(attempts) != 0 {
		t.Errorf("cancelled ctx: %d attempts, %v", len(attempts), err)
	}
}
