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
	"github.com/wecombot/wecombot/adapter/wecomsim"
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
		"Answer delivered to message/send (1 part)", "demo model", "你说：hello from the page"} {
		if !strings.Contains(got, want) {
			t.Errorf("the chat page lacks %q", want)
		}
	}
	// The AI bot, as the page's script posts: the answer comes back as
	// JSON, and so does the polling.
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/chat",
		strings.NewReader(url.Values{"bot": {demoAIBot}, "user": {"lisi"}, "text": {"hello AI bot"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	posted := page(client.Do(req))
	polled := page(client.Get(base + "/admin/chat?format=json&lang=en"))
	for _, want := range []string{`"stream":"【演示模型 / demo model】你说：hello AI bot`, `"finished":true`, `"done":true`, "Stream finished; polls by WeCom:"} {
		if !strings.Contains(posted, want) || !strings.Contains(polled, want) {
			t.Errorf("the script's answer or the polling lacks %q", want)
		}
	}
	app, ai := d.Main.Config.Bots[0], d.Main.Config.Bots[1]
	for name, secret := range map[string]string{"callback token": app.Token, "AES key": app.EncodingAESKey, "app secret": app.Secret,
		"access token": d.Sim.CurrentToken(demoAgent), "AI bot token": ai.Token, "AI bot AES key": ai.EncodingAESKey} {
		for what, body := range map[string]string{"page": got, "JSON": polled} {
			if secret == "" || strings.Contains(body, secret) {
				t.Errorf("the chat %s shows the %s (or it is empty)", what, name)
			}
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s\nJSON:\n%s", got, polled)
	}
}

// TestDemoChatAsAnAIBotUser: a message to the demo's AI bot is answered on
// a stream that WeCom polls; the chat reports it as it grows, cumulative,
// until finish, and the answer is the echo model's.
func TestDemoChatAsAnAIBotUser(t *testing.T) {
	d := startTestDemo(t)
	if b := d.Main.Config.Bots[1]; b.Name != demoAIBot || b.Kind != adapter.KindAIBot || b.Mode != adapter.ModeCallback ||
		b.BotID == "" || len(b.EncodingAESKey) != 43 || b.Token == "" {
		t.Fatalf("the demo's AI bot: %+v", b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var updates []web.ChatTrace
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoAIBot, User: "xiaoming", Text: "流式演示"},
		func(t web.ChatTrace) { updates = append(updates, t) })
	if err != nil {
		t.Fatal(err)
	}
	if !trace.AIBot || !trace.Done || trace.Status != http.StatusOK || trace.Path != "/wecom/"+demoAIBot+"/callback" ||
		!trace.Finished || trace.Refreshes < 1 || len(trace.Later) != 0 {
		t.Fatalf("trace %+v", trace)
	}
	if !strings.Contains(trace.Stream, "demo model") || !strings.Contains(trace.Stream, "你说：流式演示") {
		t.Fatalf("streamed answer %q", trace.Stream)
	}
	if trace.CipherLen < 64 || len(trace.Signature) != 40 || trace.Total < trace.Delivered || trace.Delivered <= 0 {
		t.Fatalf("the callback as sent: %+v", trace)
	}
	// The page saw the stream grow: each update's text starts the next's.
	if len(updates) < 2 {
		t.Fatalf("%d updates, want one per reply", len(updates))
	}
	for i, u := range updates {
		if u.Done || !strings.HasPrefix(trace.Stream, u.Stream) || (i > 0 && !strings.HasPrefix(u.Stream, updates[i-1].Stream)) {
			t.Fatalf("update %d of %d: %+v", i, len(updates), u)
		}
	}
}

// TestDemoChatInAGroup: in a group the text @mentions the bot, which the
// service strips before the model sees it.
func TestDemoChatInAGroup(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoAIBot, User: "lisi", Text: "群里问一句", Group: "wrgroup1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !trace.Finished || !strings.Contains(trace.Stream, "群里问一句") || strings.Contains(trace.Stream, "@"+demoAIBot) {
		t.Fatalf("group answer %+v", trace)
	}
}

// TestDemoChatWelcome: opening the chat gets replies.welcome, as a text
// reply from the AI bot (enter_chat) and at message/send from the app
// (enter_agent).
func TestDemoChatWelcome(t *testing.T) {
	d := startTestDemo(t)
	welcome := d.Main.Config.Replies.Welcome
	if welcome == "" {
		t.Fatal("the demo has no welcome to try")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, bot := range []string{demoAIBot, demoBot} {
		trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: bot, User: "wangwu", Welcome: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if trace.Status != http.StatusOK || len(trace.Answer) != 1 || trace.Answer[0] != welcome || trace.Stream != "" {
			t.Fatalf("%s: welcome %+v", bot, trace)
		}
	}
}

// TestDemoChatLongAnswerThroughResponseURL: what does not fit the stream's
// 20480 bytes comes through the message's response_url, shown after it.
func TestDemoChatLongAnswerThroughResponseURL(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	long := strings.Repeat("长", 7500) // 22500 bytes
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoAIBot, User: "zhaoliu", Text: long}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !trace.Finished || len(trace.Stream) > wecomsim.AIBotMaxContentBytes || len(trace.Later) != 1 ||
		strings.Count(trace.Stream+strings.Join(trace.Later, ""), "长") != 7500 {
		t.Fatalf("stream of %d bytes, later %d part(s)", len(trace.Stream), len(trace.Later))
	}
}

// TestDemoChatFailsSends: failing the next send makes the answer's first
// attempt fail at the simulator; the outbox retries and it arrives.
func TestDemoChatFailsSends(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := d.Chat.FailSends(ctx, 1); err != nil {
		t.Fatal(err)
	}
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoBot, User: "sunqi", Text: "retry me"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(trace.Answer) != 1 || !strings.Contains(trace.Answer[0], "retry me") {
		t.Fatalf("answer after a failed send: %+v", trace)
	}
	if n := d.Sim.Rejected()[-1]; n != 1 || d.Sim.SendCalls() != 2 {
		t.Fatalf("sends refused with -1: %d, calls %d; want 1 of 2", n, d.Sim.SendCalls())
	}
	// A simulator in another process cannot be told to fail.
	if err := newSimChat(newRemoteDeliveries("http://127.0.0.1:1"), nil).FailSends(ctx, 1); !errors.Is(err, web.ErrChatUnsupported) {
		t.Fatalf("remote FailSends: %v", err)
	}
}

// TestDemoChatAsAWeChatCustomer: the chat plays a customer of the demo's
// 微信客服 account: entering gets kf.welcome through send_msg_on_event
// (once: WeCom gives no second welcome_code), a text gets the echo
// model's answer at kf/send_msg after the service pulled it, and the
// receptionist's buttons hand the customer to a person and back.
func TestDemoChatAsAWeChatCustomer(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const customer = "wmChatCustomer01"
	chat := func(req web.ChatRequest) web.ChatTrace {
		t.Helper()
		req.Bot, req.User, req.KF = demoBot, customer, demoKF
		var updates int
		trace, err := d.Chat.Chat(ctx, req, func(web.ChatTrace) { updates++ })
		if err != nil {
			t.Fatal(err)
		}
		if !trace.KF || !trace.Done || trace.Status != http.StatusOK || trace.Path != "/wecom/demo/callback" ||
			trace.CipherLen < 64 || len(trace.Signature) != 40 || (updates == 0 && !trace.NoCode) {
			t.Fatalf("%+v: trace %+v after %d updates", req, trace, updates)
		}
		return trace
	}
	if tr := chat(web.ChatRequest{Welcome: true}); len(tr.Answer) != 1 || tr.Answer[0] != demoKFWelcome || tr.NoCode || tr.Pulls < 1 {
		t.Fatalf("welcome: %+v", tr)
	}
	if got := d.Sim.KFReceived(demoKF, customer); len(got) != 1 || !got[0].OnEvent {
		t.Fatalf("the welcome at the simulator: %+v", got)
	}
	if tr := chat(web.ChatRequest{Welcome: true}); len(tr.Answer) != 0 || !tr.NoCode {
		t.Fatalf("second welcome: %+v", tr)
	}
	tr := chat(web.ChatRequest{Text: "客服聊天 one"})
	if len(tr.Answer) != 1 || !strings.Contains(tr.Answer[0], "demo model") || !strings.Contains(tr.Answer[0], "客服聊天 one") ||
		tr.Pulls < 1 || tr.Human || tr.Delivered <= 0 || tr.Total < tr.Delivered {
		t.Fatalf("answer: %+v", tr)
	}
	if got := d.Sim.KFReceived(demoKF, customer); len(got) != 2 || got[1].OnEvent || got[1].Content != tr.Answer[0] {
		t.Fatalf("at kf/send_msg: %+v", got)
	}

	// A receptionist takes over: the next text is pulled, not answered.
	if tr := chat(web.ChatRequest{KFAction: web.ChatKFTakeOver}); len(tr.Answer) != 0 || tr.Pulls < 1 {
		t.Fatalf("take over: %+v", tr)
	}
	if tr := chat(web.ChatRequest{Text: "a person, please"}); !tr.Human || len(tr.Answer) != 0 || tr.Pulls < 1 {
		t.Fatalf("while a person has the customer: %+v", tr)
	}
	// The conversation ends: the bot answers again.
	chat(web.ChatRequest{KFAction: web.ChatKFEnd})
	if tr := chat(web.ChatRequest{Text: "bot again"}); tr.Human || len(tr.Answer) != 1 || !strings.Contains(tr.Answer[0], "bot again") {
		t.Fatalf("after the end: %+v", tr)
	}
	if got := d.Sim.KFReceived(demoKF, customer); len(got) != 3 {
		t.Fatalf("the customer received %d messages, want the welcome and two answers: %+v", len(got), got)
	}
	// A simulator in another process has no door for customers.
	remote := newSimChat(newRemoteDeliveries("http://127.0.0.1:1"), d.Main.Config.Bots)
	remote.setService("http://" + d.Main.Addr)
	if _, err := remote.Chat(ctx, web.ChatRequest{Bot: demoBot, User: customer, KF: demoKF, Text: "x"}, nil); !errors.Is(err, web.ErrChatUnsupported) {
		t.Fatalf("remote kf chat: %v", err)
	}
}

// TestDemoChatImage: the demo's echo model sees images; an image sent from
// the chat goes through the simulator's media/get (app) or its encrypted
// media URL (AI bot) and comes back described by type and size.
func TestDemoChatImage(t *testing.T) {
	d := startTestDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 92)...)
	trace, err := d.Chat.Chat(ctx, web.ChatRequest{Bot: demoBot, User: "xiaoming", Image: png}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(trace.Answer) != 1 || !strings.Contains(trace.Answer[0], "请描述这张图片。 [image/png, 100 bytes]") {
		t.Fatalf("app: answer %q", trace.Answer)
	}
	trace, err = d.Chat.Chat(ctx, web.ChatRequest{Bot: demoAIBot, User: "xiaoming", Text: "看看这个", Image: png}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !trace.Finished || !strings.Contains(trace.Stream, "看看这个 [image/png, 100 bytes]") {
		t.Fatalf("AI bot: stream %q", trace.Stream)
	}
	if d.Sim.MediaGets() != 1 || d.Sim.AIBotMediaGets() != 1 {
		t.Errorf("downloads: media/get %d, AI bot media %d", d.Sim.MediaGets(), d.Sim.AIBotMediaGets())
	}
}
