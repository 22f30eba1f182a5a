package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/web"
)

// startTestDemo is `wecombot demo` on port 0 with the echo model.
func startTestDemo(t *testing.T) *demo {
	t.Helper()
	d, err := startDemo(context.Background(), demoOptions{
		Addr: "127.0.0.1:0", Getenv: func(string) string { return "" }, Log: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestDemoChatAsAWeComUser(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoBot, User: "xiaoming", Text: "演示聊天 one"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if trace.Status != http.StatusOK || trace.Path != "/wecom/demo/callback" {
		t.Fatalf("callback: %+v", trace)
	}
	if len(trace.Answer) != 1 || !strings.Contains(trace.Answer[0], "demo model") || !strings.Contains(trace.Answer[0], "演示聊天 one") {
		t.Fatalf("answer %q", trace.Answer)
	}
	// The ciphertext is what went out: base64 of 16 random bytes, length,
	// text, corp id, padded to AES blocks. The plaintext is not in it.
	if trace.CipherLen < 64 || len(trace.CipherPrefix) != cipherShown || strings.Contains(trace.CipherPrefix, "xiaoming") ||
		len(trace.Signature) != 40 {
		t.Fatalf("callback as sent: %d %q %q", trace.CipherLen, trace.CipherPrefix, trace.Signature)
	}
	for name, dur := range map[string]time.Duration{"encrypted": trace.Encrypted, "answered": trace.Answered,
		"delivered": trace.Delivered, "total": trace.Total} {
		if dur <= 0 {
			t.Errorf("%s latency %v, want > 0", name, dur)
		}
	}
	if sum := trace.Encrypted + trace.Delivered; trace.Total != sum {
		t.Errorf("total %v, want encrypting %v + until delivered %v", trace.Total, trace.Encrypted, trace.Delivered)
	}
	// The next exchange gets its own answer, not the previous one's.
	trace, err = d.Chat.Chat(ctx, web.ChatRequest{Bot: demoBot, User: "xiaoming", Text: "two"}, nil)
	if err != nil || len(trace.Answer) != 1 || !strings.Contains(trace.Answer[0], "你说：two") {
		t.Fatalf("second answer %q, %v", trace.Answer, err)
	}
	if _, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: "nobody", User: "xiaoming", Text: "x"}, nil); !errors.Is(err, adapter.ErrUnknownBot) {
		t.Fatalf("unknown bot: %v", err)
	}
	// An answer WeCom refuses to deliver never comes: the trace says so when ctx ends.
	d.Sim.SetInvalidUser("ghost")
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	trace, err = d.Chat.Chat(short, web.ChatRequest{Bot: demoBot, User: "ghost", Text: "anyone?"}, nil)
	if err != nil || trace.Status != http.StatusOK || len(trace.Answer) != 0 || trace.Delivered != 0 || trace.Total < 900*time.Millisecond {
		t.Fatalf("unanswered exchange: %+v, %v", trace, err)
	}
}

func TestDemoChatPage(t *testing.T) {
	d := startTestDemo(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	base := "http://" + d.Main.Addr
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d\n%s", resp.Request.URL, resp.StatusCode, b)
		}
		return string(b)
	}
	page(client.PostForm(base+"/admin/login", url.Values{"username": {"admin"}, "password": {d.Password}}))
	if home := page(client.Get(base + "/admin/?lang=en")); !strings.Contains(home, `href="/admin/chat"`) {
		t.Fatalf("the demo's menu has no chat page:\n%s", home)
	}
	got := page(client.PostForm(base+"/admin/chat", url.Values{"bot": {demoBot}, "user": {"lisi"}, "text": {"hello from the page"}}))
	for _, want := range []string{"Callback encrypted and signed", "POST /wecom/demo/callback answered 200",
		"Answer delivered to message/send (1 part(s))", "demo model", "你说：hello from the page"} {
		if !strings.Contains(got, want) {
			t.Errorf("the chat page lacks %q", want)
		}
	}
	bot := d.Main.Config.Bots[0]
	for name, secret := range map[string]string{"callback token": bot.Token, "AES key": bot.EncodingAESKey, "app secret": bot.Secret,
		"access token": d.Sim.CurrentToken(demoAgent)} {
		if secret == "" || strings.Contains(got, secret) {
			t.Errorf("the chat page shows the %s (or it is empty)", name)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", got)
	}
}
