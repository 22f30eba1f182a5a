package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/wecombot/wecombot/web/webtest"
)

// TestDemoChatInBrowser types a message on the demo's "chat as a WeCom
// user" page in headless Chromium and sees the echo model's answer come
// back through the simulator, then talks to the AI bot and sees its
// stream end in place, then checks the page at 375 px, where it writes in
// Chinese as a WeChat customer of the 微信客服 account. The rest of the
// panel is driven by web's TestBrowser.
func TestDemoChatInBrowser(t *testing.T) {
	d := startTestDemo(t)
	base := "http://" + d.Main.Addr

	b := webtest.Start(t, 1280, 900)
	ctx, do := b.Ctx, b.Do
	// read returns the text of sel in one script: the page's refreshes
	// replace the log's nodes, which a read in several steps can lose.
	read := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(`+strconv.Quote(sel)+`).textContent`))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }
	click := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

	do("log in", chromedp.Navigate(base+"/admin/login?lang=en"), visible("#password"),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"), chromedp.SendKeys(chromedp.CSS("#password"), d.Password),
		click("#login"), visible("#bot-demo"))
	do("open the chat page", click(`nav a[href="/admin/chat"]`), visible("#chat-form"), visible("#exchanges-empty"))
	if u, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#chat-user"))); err != nil || u != "demo-user" {
		t.Fatalf("default user %q (%v), want demo-user", u, err)
	}
	do("chat as wangwu", chromedp.Clear(chromedp.CSS("#chat-user")), chromedp.SendKeys(chromedp.CSS("#chat-user"), "wangwu"),
		chromedp.SendKeys(chromedp.CSS("#chat-text"), "typed in a browser"), click("#chat-send"), visible("#exchanges .answer"),
		chromedp.WaitNotPresent(chromedp.CSS("#exchanges .waiting")))
	if a := read("#exchanges .answer"); !strings.Contains(a, "demo model") || !strings.Contains(a, "typed in a browser") {
		t.Fatalf("answer on the page %q", a)
	}
	if steps := read("#exchanges .steps"); !strings.Contains(steps, "POST /wecom/demo/callback answered 200") ||
		!strings.Contains(steps, "Answer delivered to message/send") || !strings.Contains(steps, " ms") {
		t.Fatalf("steps on the page %q", steps)
	}
	if got := d.Sim.Delivered(); len(got) == 0 || got[len(got)-1].ToUser != "wangwu" {
		t.Fatalf("the answer did not go to wangwu at the simulator: %+v", got)
	}

	// As a user of the AI bot, in its group: the page stays (no reload: the
	// mark set on window survives), and the stream grows in place until
	// the final answer, which is in view without scrolling.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	do("chat with the AI bot", chromedp.WaitEnabled(chromedp.CSS("#chat-send")),
		chromedp.SetValue(chromedp.CSS("#chat-bot"), demoAIBot), chromedp.SetValue(chromedp.CSS("#chat-where"), "group"),
		chromedp.SendKeys(chromedp.CSS("#chat-text"), "streamed in a browser"), click("#chat-send"),
		// The demo's model streams for about two seconds: part of the
		// answer shows while the exchange is still pending.
		visible("#exchanges > li.pending:last-child .answer.stream"))
	do("wait for the end of the stream", chromedp.WaitNotPresent(chromedp.CSS("#exchanges .waiting")))
	if final := read("#exchanges > li:last-child .answer.stream"); !strings.Contains(final, "demo model") || !strings.Contains(final, "streamed in a browser") || strings.Contains(final, "@"+demoAIBot) {
		t.Fatalf("streamed answer on the page %q", final)
	}
	if steps := read("#exchanges > li:last-child .steps"); !strings.Contains(steps, "POST /wecom/assistant/callback answered 200") ||
		!strings.Contains(steps, "Stream finished; polls by WeCom:") {
		t.Fatalf("AI bot steps on the page %q", steps)
	}
	inView := `(function () {
		var log = document.getElementById("chat-log").getBoundingClientRect();
		var last = document.querySelector("#exchanges > li:last-child").getBoundingClientRect();
		return last.bottom <= log.bottom + 1 && last.bottom > log.top && log.bottom <= window.innerHeight;
	})()`
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true && `+inView)); err != nil || !ok {
		t.Fatalf("the page reloaded or the newest exchange is out of view (%v)", err)
	}
	if v, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#chat-text"))); err != nil || v != "" {
		t.Fatalf("the text field keeps %q (%v) after sending", v, err)
	}
	if u, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.search`)); err != nil || !strings.Contains(u, "bot="+demoAIBot) || !strings.Contains(u, "chat=group") {
		t.Fatalf("the address %q (%v) does not keep the bot and chat for a reload", u, err)
	}

	do("narrow the viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Reload(), visible("#exchanges"))
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](inView)); err != nil || !ok {
		t.Fatalf("at 375 px the newest exchange is out of view (%v)", err)
	}
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if width > 375 {
		t.Errorf("the chat page is %d px wide at a 375 px viewport", width)
	}

	// In Chinese, at 375 px, as a WeChat customer of the demo's 微信客服
	// account: the receptionist's buttons show once it is chosen, entering
	// gets kf.welcome and a text the echo model's answer at kf/send_msg.
	do("switch to Chinese", chromedp.Navigate(base+"/admin/chat?lang=zh"), visible("#chat-form"))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	choose := `(function () { var s = document.getElementById("chat-bot"); s.value = "kf:` + demoKF + `";
		s.dispatchEvent(new Event("change")); return s.value; })()`
	if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](choose)); err != nil || v != "kf:"+demoKF {
		t.Fatalf("the 微信客服 account is not a target (%q, %v)", v, err)
	}
	do("enter as a WeChat customer", visible("#chat-kf-take-over"), chromedp.Clear(chromedp.CSS("#chat-user")),
		chromedp.SendKeys(chromedp.CSS("#chat-user"), "wmBrowser01"), click("#chat-welcome"),
		// The third exchange, after the app's and the AI bot's.
		visible("#exchanges > li:nth-child(3) .answer"), chromedp.WaitNotPresent(chromedp.CSS("#exchanges .waiting")))
	if a := read("#exchanges > li:last-child .answer"); a != demoKFWelcome {
		t.Fatalf("welcome on the page %q", a)
	}
	do("write as a WeChat customer", chromedp.WaitEnabled(chromedp.CSS("#chat-send")),
		chromedp.SendKeys(chromedp.CSS("#chat-text"), "客服浏览器测试"), click("#chat-send"),
		visible("#exchanges > li:nth-child(4) .answer"), chromedp.WaitNotPresent(chromedp.CSS("#exchanges .waiting")))
	if a := read("#exchanges > li:last-child .answer"); !strings.Contains(a, "demo model") || !strings.Contains(a, "客服浏览器测试") {
		t.Fatalf("the customer's answer on the page %q", a)
	}
	if steps := read("#exchanges > li:last-child .steps"); !strings.Contains(steps, "POST /wecom/demo/callback 返回 200") ||
		!strings.Contains(steps, "服务已用 kf/sync_msg 拉取") || !strings.Contains(steps, "回复已经 kf/send_msg 送达（1 段）") {
		t.Fatalf("the customer's steps on the page %q", steps)
	}
	if meta := read("#exchanges > li:last-child .meta"); !strings.Contains(meta, "微信客服 "+demoKF) {
		t.Fatalf("the exchange does not name the account: %q", meta)
	}
	if got := d.Sim.KFReceived(demoKF, "wmBrowser01"); len(got) != 2 || !got[0].OnEvent || got[1].OnEvent {
		t.Fatalf("at the simulator the customer received %+v", got)
	}
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true && `+inView)); err != nil || !ok {
		t.Fatalf("the page reloaded or the customer's exchange is out of view at 375 px (%v)", err)
	}
	if width, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || width > 375 {
		t.Errorf("the chat page is %d px wide at a 375 px viewport with a 微信客服 account chosen (%v)", width, err)
	}
	// Kept beside web's dashboard screenshots ($WECOMBOT_SCREENSHOTS, else /tmp).
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("WECOMBOT_SCREENSHOTS")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, "wecombot-chat-375.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	b.Check()
}
