package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium package, as in web/browser_test.go:
// without it this test skips, under CI (CI set) it fails.
const chromiumPath = "/usr/bin/chromium"

// TestDemoChatInBrowser types a message on the demo's "chat as a WeCom
// user" page in headless Chromium and sees the echo model's answer come
// back through the simulator, then checks the page at 375 px. The rest of
// the panel is driven by web's TestBrowser.
func TestDemoChatInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found, and CI is set: browser tests must run in CI (apt-get install chromium)", chromiumPath)
		}
		t.Skip("!!! BROWSER TEST SKIPPED: " + chromiumPath + " not found (apt-get install chromium); with CI set this is a failure. !!!")
	}
	d := startTestDemo(t)
	base := "http://" + d.Main.Addr

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	// Script and console errors (CSP violations among them) fail the test.
	var mu sync.Mutex
	var problems []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String()+" "+m.URL)
				mu.Unlock()
			}
		}
	}()
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(stepCtx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		s, err := chromedp.Run(stepCtx, chromedp.Text(chromedp.CSS(sel)))
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
		chromedp.SendKeys(chromedp.CSS("#chat-text"), "typed in a browser"), click("#chat-send"), visible("#exchanges .answer"))
	if a := text("#exchanges .answer"); !strings.Contains(a, "demo model") || !strings.Contains(a, "typed in a browser") {
		t.Fatalf("answer on the page %q", a)
	}
	if steps := text("#exchanges .steps"); !strings.Contains(steps, "POST /wecom/demo/callback answered 200") ||
		!strings.Contains(steps, "Answer delivered to message/send") || !strings.Contains(steps, " ms") {
		t.Fatalf("steps on the page %q", steps)
	}
	if got := d.Sim.Delivered(); len(got) == 0 || got[len(got)-1].ToUser != "wangwu" {
		t.Fatalf("the answer did not go to wangwu at the simulator: %+v", got)
	}

	do("narrow the viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Reload(), visible("#exchanges"))
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if width > 375 {
		t.Errorf("the chat page is %d px wide at a 375 px viewport", width)
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
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
}
