package wxcrypto

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/silenceper/wechat/v2/util"
)

// benchInput is a ~300-byte text callback, sealed as WeCom would send it.
func benchInput(b *testing.B) (c *Cipher, sig, ts, nonce, encrypt string) {
	b.Helper()
	plain := "<xml><ToUserName><![CDATA[ww1a2b3c4d5e6f7a8b]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>" +
		"<CreateTime>1764000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[" +
		strings.Repeat("请帮我总结一下", 2) + "the meeting notes" + "]]></Content><MsgId>7440000000000000001</MsgId><AgentID>1000002</AgentID></xml>"
	if n := len(plain); n < 280 || n > 340 {
		b.Fatalf("benchmark message is %d bytes", n)
	}
	c, err := New(testToken, testKey, testCorp)
	if err != nil {
		b.Fatal(err)
	}
	ts, nonce = "1764000001", "842617"
	encrypt = c.EncryptWithRandom([16]byte([]byte("fedcba9876543210")), []byte(plain))
	return c, c.Signature(ts, nonce, encrypt), ts, nonce, encrypt
}

// BenchmarkCallback is the per-request work of a POST callback.
func BenchmarkCallback(b *testing.B) {
	c, sig, ts, nonce, encrypt := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Verify(sig, ts, nonce, encrypt); err != nil {
			b.Fatal(err)
		}
		plain, err := c.Decrypt(encrypt)
		if err != nil {
			b.Fatal(err)
		}
		m, err := ParseMessage(plain)
		if err != nil || m.MsgType != "text" {
			b.Fatal(m.MsgType, err)
		}
	}
}

// BenchmarkCallbackSilenceper is the same work done with silenceper and
// encoding/xml, for comparison.
func BenchmarkCallbackSilenceper(b *testing.B) {
	c, sig, ts, nonce, encrypt := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if util.Signature(c.token, ts, nonce, encrypt) != sig {
			b.Fatal("signature")
		}
		_, plain, err := util.DecryptMsg(testCorp, encrypt, testKey)
		if err != nil {
			b.Fatal(err)
		}
		var m refMessage
		if err := xml.Unmarshal(plain, &m); err != nil || m.MsgType != "text" {
			b.Fatal(m.MsgType, err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	c, sig, ts, nonce, encrypt := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Verify(sig, ts, nonce, encrypt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	c, _, _, _, encrypt := benchInput(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decrypt(encrypt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMessage(b *testing.B) {
	c, _, _, _, encrypt := benchInput(b)
	plain, err := c.Decrypt(encrypt)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMessage(plain); err != nil {
			b.Fatal(err)
		}
	}
}
