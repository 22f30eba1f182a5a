package aibot_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// status is the one place a callback handler turns the package's errors
// into HTTP statuses.
func status(err error) int {
	switch {
	case errors.Is(err, aibot.ErrSignature):
		return http.StatusForbidden
	case errors.Is(err, aibot.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusBadRequest
	}
}

// A callback handler built on Codec: the URL check, then a message answered
// at once with the first stream reply.
func ExampleCodec() {
	const token, key = "QDG6eKwecombot", "kWxPEV2UEDyxWpmPdKC3F6gKwLVJqAjLzqxj5dbtbB9"
	codec, err := aibot.NewCodec(token, key)
	if err != nil {
		panic(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := aibot.ParseQuery(r.URL.RawQuery)
		if err != nil {
			http.Error(w, "bad query", status(err))
			return
		}
		if r.Method == http.MethodGet {
			echo, err := codec.VerifyURL(q)
			if err != nil {
				http.Error(w, "refused", status(err))
				return
			}
			w.Write(echo)
			return
		}
		plain, err := codec.Open(q, r.Body)
		if err != nil {
			http.Error(w, "refused", status(err))
			return
		}
		m, err := aibot.ParseMessage(plain)
		if err != nil {
			http.Error(w, "refused", status(err))
			return
		}
		text, ok := m.Prompt()
		fmt.Printf("%s from %s in %s: %q %v\n", m.MsgType, m.Sender(), m.Conversation(), text, ok)
		body, err := codec.Seal(aibot.PassiveStream("stream-1", "", false, "fb-1"), q.Nonce, time.Unix(1764000300, 0))
		if err != nil {
			http.Error(w, "", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})

	// WeCom's side, sealed with the same key material.
	wecom, _ := wxcrypto.New(token, key, "")
	send := func(method, body string) *httptest.ResponseRecorder {
		encrypt := wecom.EncryptWithRandom([16]byte{}, []byte(body))
		target := "/wecom/assistant/callback?msg_signature=" + wecom.Signature("1764000299", "7788", encrypt) +
			"&timestamp=1764000299&nonce=7788"
		var req *http.Request
		if method == http.MethodGet {
			req = httptest.NewRequest(method, target+"&echostr="+strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(encrypt), nil)
		} else {
			req = httptest.NewRequest(method, target, strings.NewReader(`{"encrypt":"`+encrypt+`"}`))
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec
	}

	fmt.Println(send(http.MethodGet, "echo-123").Body.String())
	rec := send(http.MethodPost, `{"msgid":"m1","aibotid":"AIBOTID","chatid":"CHATID","chattype":"group",`+
		`"from":{"userid":"lisi"},"msgtype":"text","text":{"content":"@小助手 你好"}}`)
	fmt.Println(rec.Code, strings.Contains(rec.Body.String(), `"nonce":"7788"`))
	// Output:
	// echo-123
	// text from lisi in CHATID: "你好" true
	// 200 true
}
