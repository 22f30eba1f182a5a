package web

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gin-gonic/gin"
	"github.com/wecombot/wecombot/web/webtest"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

const (
	browserCorp   = "wwbrowsercorp"
	browserAgent  = 1000002
	browserSecret = "browser-app-SECRET-never-shown"
	browserToken  = "browserCallbackTokenNeverShown"
	// The AI bot on the long connection beside the app.
	browserAIBot    = "assistant"
	browserBotID    = "aibBROWSER"
	browserAISecret = "browser-aibot-SECRET-never-shown"
	// The app's 微信客服 account.
	browserKF = "wkBROWSERKF000000000000000000001"
)

// Texts the browser test's model treats apart.
const (
	textModelDown = "model down" // the model is unreachable for it
	textHold      = "hold on"    // its answer waits for browserLLM.release
)

// browserLLM answers every conversation with its last user message, except
// textModelDown, which it sends to a model API nobody listens on (the real
// client's failure), and textHold, whose answer waits for release.
type browserLLM struct {
	down    *llm.Client
	release chan struct{}
}

func (l browserLLM) Complete(ctx context.Context, msgs []llm.Message) (string, error) {
	switch last := msgs[len(msgs)-1].Content; last {
	case textModelDown:
		return l.down.Complete(ctx, msgs)
	case textHold:
		select {
		case <-l.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "echo: " + msgs[len(msgs)-1].Content, nil
}

// browserEnv is the real thing in-process: the admin server and the WeCom
// side (adapter.App) over a real database, against the WeCom simulator.
type browserEnv struct {
	t   *testing.T
	sim *wecomsim.Server
	db  *storage.DB
	app *adapter.App
	url string
	cb  *wecomsim.Callback
	id  int64
	llm browserLLM
}

func newBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	e := &browserEnv{t: t, id: 7450000000000000000, llm: browserLLM{release: make(chan struct{}),
		// Port 1 on the loopback: the dial is refused at once.
		down: llm.New(llm.Config{BaseURL: "http://127.0.0.1:1/v1", APIKey: "k", Model: "m", Timeout: config.Duration(5 * time.Second)})}}
	e.sim = wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: browserCorp, AgentID: browserAgent, Secret: browserSecret}},
		AIBots:     []wecomsim.AIBot{{BotID: browserBotID, Secret: browserAISecret}},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: browserKF, AgentID: browserAgent}}})
	simSrv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(simSrv.Close)
	db, err := storage.Open(t.Context(), storage.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "b.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e.db = db
	aesKey := wecomsim.NewEncodingAESKey()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	app, err := adapter.New(adapter.Options{
		WeCom: adapter.WeComConfig{APIBase: simSrv.URL, TokenRefreshBefore: config.Duration(5 * time.Minute), RequestTimeout: config.Duration(5 * time.Second),
			AIBotWSURL: "ws" + strings.TrimPrefix(simSrv.URL, "http") + "/wecom" + wecomsim.AIBotWSPath},
		Bots: []adapter.BotConfig{{Name: "helpdesk", CorpID: browserCorp, AgentID: browserAgent, Secret: browserSecret,
			Token: browserToken, EncodingAESKey: aesKey, KF: adapter.KFConfig{Enabled: true, Accounts: []string{browserKF}}},
			{Name: browserAIBot, Kind: adapter.KindAIBot, Mode: adapter.ModeWebSocket, BotID: browserBotID, Secret: browserAISecret}},
		Pipeline: adapter.PipelineConfig{LLM: adapter.LLMConfig{MaxConcurrency: 2, HistoryTurns: 10}, Replies: adapter.Replies{Unavailable: "unavailable"},
			Exclusive: true},
		Outbox: adapter.OutboxConfig{GiveUpAfter: time.Hour},
		Store:  db, LLM: e.llm, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.app = app
	engine := gin.New()
	app.Routes(engine)
	New(Options{
		Admin: AdminConfig{Username: adminUser, Password: adminPW}, Bots: app, KF: app, Outbox: app, Store: db,
		Config: func() ConfigReport { return ConfigReport{Text: "admin:\n  password: '******'\n"} }, Log: quiet,
	}).Routes(engine)
	srv := httptest.NewServer(engine)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = app.Shutdown(ctx)
	})
	e.url = srv.URL
	e.cb = &wecomsim.Callback{URL: srv.URL + "/wecom/helpdesk/callback", Token: browserToken, EncodingAESKey: aesKey, CorpID: browserCorp}
	e.sim.SetKFCallback(browserAgent, e.cb)
	return e
}

// kfWrites has a WeChat customer write text to the kf account and waits
// for the answer.
func (e *browserEnv) kfWrites(customer, text string) {
	e.t.Helper()
	n := len(e.sim.KFReceived(browserKF, customer))
	if _, err := e.sim.KFCustomerWrites(e.t.Context(), browserKF, customer, text); err != nil {
		e.t.Fatal(err)
	}
	eventually.True(e.t, func() bool { return len(e.sim.KFReceived(browserKF, customer)) > n }, "the answer to customer %s", customer)
}

// say posts a text from user through the encrypted callback.
func (e *browserEnv) say(user, text string) {
	e.t.Helper()
	e.id++
	xml := wecomsim.TextXML(browserCorp, user, text, e.id, time.Now().Unix(), browserAgent)
	if status, body, err := e.cb.Post(e.t.Context(), xml); err != nil || status != 200 {
		e.t.Fatalf("callback: %d %q %v", status, body, err)
	}
}

// delivered waits for the n-th message delivered to anyone.
func (e *browserEnv) delivered(n int) wecomsim.Sent {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	sent, err := e.sim.WaitDelivered(ctx, n)
	if err != nil {
		e.t.Fatalf("waiting for delivery %d: %v (delivered: %v)", n, err, e.sim.Delivered())
	}
	return sent[n-1]
}

// screenshotDir is where the dashboard screenshots go ($WECOMBOT_SCREENSHOTS,
// else the temporary folder): CI keeps them as artifacts.
func screenshotDir() string {
	if d := os.Getenv("WECOMBOT_SCREENSHOTS"); d != "" {
		return d
	}
	return os.TempDir()
}

// TestBrowser drives the panel in headless Chromium, one browser for every
// step: log in, switch language, see and refresh a token, see an AI bot's
// long connection, open and reset a
// conversation, send a message that reaches the fake WeCom, re-send a failed
// answer, and check every page at 375 px.
func TestBrowser(t *testing.T) {
	e := newBrowserEnv(t)
	e.say("zhangsan", "hello bot")
	if got := e.delivered(1); got.ToUser != "zhangsan" || got.Content != "echo: hello bot" {
		t.Fatalf("first answer %+v", got)
	}

	// The AI bot's long connection is up before the dashboard is opened.
	eventually.True(t, func() bool {
		for _, b := range e.app.Bots() {
			if b.Name == browserAIBot && b.Connection != nil && b.Connection.State == "connected" {
				return true
			}
		}
		return false
	}, "the AI bot to connect")

	b := webtest.Start(t, 1280, 900)
	ctx, do, text := b.Ctx, b.Do, b.Text
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		saveScreenshot(t, name, png)
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }
	click := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

	do("open the panel", chromedp.Navigate(e.url+"/admin/"), visible("#password"))
	if location, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.Contains(location, "/admin/login?next=") {
		t.Fatalf("without a session the panel shows %s (%v)", location, err)
	}
	do("switch to Chinese", click(`a[hreflang="zh"]`), visible(`a[hreflang="zh"][aria-current]`))
	if h1 := text("h1"); h1 != "登录 wecombot" {
		t.Fatalf("Chinese login title %q", h1)
	}
	do("switch to English", click(`a[hreflang="en"]`), visible(`a[hreflang="en"][aria-current]`))
	if h1 := text("h1"); h1 != "Log in to wecombot" {
		t.Fatalf("English login title %q", h1)
	}

	do("log in", chromedp.SendKeys(chromedp.CSS("#username"), adminUser), chromedp.SendKeys(chromedp.CSS("#password"), adminPW),
		click("#login"), visible("#bot-helpdesk"))
	if s := text("#bot-helpdesk [data-test=state]"); s != "valid" {
		t.Fatalf("token state %q, want valid", s)
	}
	if s := text("#bot-helpdesk code"); s != e.url+"/wecom/helpdesk/callback" {
		t.Fatalf("callback URL %q", s)
	}
	if s := text("#count-answered"); s != "1" {
		t.Fatalf("answered today %q, want 1", s)
	}
	// The AI bot's card: its kind, mode and connection, no token.
	for sel, want := range map[string]string{"[data-test=kind]": "AI bot", "[data-test=mode]": "long connection",
		"[data-test=state]": "connected", ".reconnects": "0"} {
		if got := text("#bot-" + browserAIBot + " " + sel); got != want {
			t.Errorf("the AI bot's %s is %q, want %q", sel, got, want)
		}
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#bot-`+browserAIBot+` button, #bot-`+browserAIBot+` .countdown").length`)); err != nil || n != 0 {
		t.Errorf("the AI bot's card has %d token controls (%v)", n, err)
	}
	do("see the AI bot's model card", visible("#model-"+browserAIBot))
	// The countdown ticks (app.js runs under the CSP).
	first := text("#bot-helpdesk .countdown")
	eventually.True(t, func() bool { return text("#bot-helpdesk .countdown") != first }, "the countdown to tick")

	before, err := strconv.Atoi(text("#bot-helpdesk .refresh-count"))
	if err != nil {
		t.Fatal(err)
	}
	fetches := e.sim.TokenFetches(browserAgent)
	do("refresh the token", click("#bot-helpdesk button.refresh"), visible(".flash"))
	if after := text("#bot-helpdesk .refresh-count"); after != strconv.Itoa(before+1) {
		t.Fatalf("refresh count %s after a refresh, want %d", after, before+1)
	}
	if e.sim.TokenFetches(browserAgent) != fetches+1 {
		t.Fatalf("the refresh did not reach WeCom: %d token fetches, want %d", e.sim.TokenFetches(browserAgent), fetches+1)
	}
	screenshot("wecombot-dashboard-desktop.png")

	do("open the conversations", click(`nav a[href="/admin/conversations"]`), visible("#users-helpdesk"),
		click(`a[href="/admin/conversations/helpdesk/zhangsan"]`), visible("#history"))
	if h := text("#history"); !strings.Contains(h, "hello bot") || !strings.Contains(h, "echo: hello bot") {
		t.Fatalf("history %q", h)
	}
	do("reset it", click("#reset"), visible("#history-empty"))
	if turns, err := e.db.Conversation(t.Context(), "helpdesk", "zhangsan", 0); err != nil || len(turns) != 0 {
		t.Fatalf("after the reset: %v, %v", turns, err)
	}
	// What was said stays on the page, with the reset marked after it.
	do("see the reset marker", visible("#exchanges .reset-marker.reset-admin"))
	if x := text("#exchanges"); !strings.Contains(x, "hello bot") || !strings.Contains(x, "echo: hello bot") ||
		strings.Index(x, "echo: hello bot") > strings.Index(x, "reset here from the panel") {
		t.Fatalf("the conversation after the reset %q", x)
	}

	do("send a message", click(`nav a[href="/admin/send"]`), visible("#send-form"),
		chromedp.SetValue(chromedp.CSS("#send-bot"), "helpdesk"),
		chromedp.SendKeys(chromedp.CSS("#send-user"), "lisi"), chromedp.SendKeys(chromedp.CSS("#send-text"), "Hello from the panel"),
		click("#send"), visible(".flash"))
	if got := e.delivered(2); got.ToUser != "lisi" || got.Content != "Hello from the panel" || got.AgentID != browserAgent {
		t.Fatalf("the send reached WeCom as %+v", got)
	}

	// A failed answer, re-sent from the messages page.
	e.sim.SetInvalidUser("wangwu")
	e.say("wangwu", "are you there")
	var failedID int64
	eventually.True(t, func() bool {
		ms, err := e.db.LatestMessages(t.Context(), storage.MessageFilter{UserID: "wangwu", States: []string{storage.MessageFailed}})
		if err == nil && len(ms) == 1 {
			failedID = ms[0].ID
		}
		return failedID != 0
	}, "wangwu's answer to fail")
	e.sim.SetValidUser("wangwu")
	card := fmt.Sprintf("#msg-%d", failedID)
	do("re-send the failed answer", chromedp.Navigate(e.url+"/admin/messages?status=failed"), visible(card+" button.resend"),
		click(card+" button.resend"), visible(".flash"))
	if got := e.delivered(3); got.ToUser != "wangwu" || got.Content != "echo: are you there" {
		t.Fatalf("the re-send reached WeCom as %+v", got)
	}

	// A pending row on Messages turns answered in place, without a reload.
	e.say("zhaoliu", textHold)
	var holdID int64
	eventually.True(t, func() bool {
		ms, err := e.db.LatestMessages(t.Context(), storage.MessageFilter{UserID: "zhaoliu"})
		if err == nil && len(ms) == 1 {
			holdID = ms[0].ID
		}
		return holdID != 0
	}, "zhaoliu's message to be stored")
	row := fmt.Sprintf("#msg-%d", holdID)
	do("see the pending row", chromedp.Navigate(e.url+"/admin/messages"), visible(row+".status-pending"))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.loaded = "once"`)); err != nil {
		t.Fatal(err)
	}
	close(e.llm.release)
	do("see it answered in place", visible(row+".status-answered"))
	if x := text(row); !strings.Contains(x, "echo: "+textHold) {
		t.Fatalf("the refreshed row %q", x)
	}
	if s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.loaded || ""`)); err != nil || s != "once" {
		t.Fatalf("the page was reloaded (%q, %v)", s, err)
	}

	// The model fails: its card says so.
	e.say("zhaoliu", textModelDown)
	eventually.True(t, func() bool {
		for _, b := range e.app.Bots() {
			if b.Name == "helpdesk" && b.LLM.State == adapter.ModelFailing {
				return true
			}
		}
		return false
	}, "the helpdesk model to be failing")

	// Every page on a 375 px phone: nothing wider than the screen.
	do("narrow the viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	for _, p := range []string{"/admin/", "/admin/conversations", "/admin/conversations/helpdesk/zhangsan",
		"/admin/messages", "/admin/send", "/admin/config"} {
		do("open "+p+" at 375 px", chromedp.Navigate(e.url+p), visible("main"))
		width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if width > 375 {
			t.Errorf("%s is %d px wide at a 375 px viewport", p, width)
		}
		if p == "/admin/" {
			screenshot("wecombot-dashboard-375.png")
		}
	}

	// The dashboard and Messages in Chinese at 375 px (CI installs a CJK
	// font so that the screenshots are readable).
	do("open the dashboard in Chinese", chromedp.Navigate(e.url+"/admin/?lang=zh"), visible("#model-helpdesk.state-failing"))
	if s := text("#model-helpdesk [data-test=model-state]"); s != "故障" {
		t.Errorf("the failing model's state in Chinese %q", s)
	}
	if s := text("#model-helpdesk .cause"); s != "无法连接模型 API。" {
		t.Errorf("the failing model's cause in Chinese %q", s)
	}
	screenshot("wecombot-dashboard-zh-375.png")
	// A WeChat customer writes to the app's 微信客服 account: the card
	// lists the account, Messages names the customer.
	e.sim.SetKFNickname("wmBROWSER", "赵六")
	e.kfWrites("wmBROWSER", "你好")
	do("open the dashboard with a kf message", chromedp.Navigate(e.url+"/admin/"), visible("#kf-helpdesk .kf-account"))
	if s := text("#kf-helpdesk h4"); s != "微信客服" {
		t.Errorf("the kf part of the card in Chinese %q", s)
	}
	if s := text("#kf-helpdesk .kf-today"); s != "1" {
		t.Errorf("kf messages today %q, want 1", s)
	}
	if s := text("#kf-helpdesk .last-pull"); s == "—" || s == "" {
		t.Errorf("the kf account's last pull %q", s)
	}
	screenshot("wecombot-dashboard-kf-zh-375.png")
	do("open Messages in Chinese", chromedp.Navigate(e.url+"/admin/messages"), visible(".filters"), visible("article.status-failed"),
		visible("article .nickname"))
	if s := text(".filters button"); s != "筛选" {
		t.Errorf("the filter button in Chinese %q", s)
	}
	if s := text("article .nickname"); s != "赵六" {
		t.Errorf("the kf customer's nickname %q", s)
	}
	for _, p := range []string{"/admin/", "/admin/messages", "/admin/conversations/helpdesk/zhangsan"} {
		do("open "+p+" in Chinese", chromedp.Navigate(e.url+p), visible("main"))
		if width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || width > 375 {
			t.Errorf("%s in Chinese is %d px wide at a 375 px viewport (%v)", p, width, err)
		}
	}
	do("open Messages in Chinese", chromedp.Navigate(e.url+"/admin/messages"), visible(".filters"))
	// The filter bar: its fields and button are of one height.
	heights, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`[...document.querySelectorAll(".filters select, .filters input, .filters button")].map(el => el.getBoundingClientRect().height)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range heights {
		if len(heights) != 4 || h != heights[0] {
			t.Errorf("the filter bar's controls are of heights %v, want 4 of one", heights)
			break
		}
	}
	screenshot("wecombot-messages-zh-375.png")
	do("open the conversation in Chinese", chromedp.Navigate(e.url+"/admin/conversations/helpdesk/zhangsan"), visible("#exchanges .reset-marker"))
	if s := text("#exchanges .reset-marker"); !strings.Contains(s, "模型上下文在此由管理面板重置") {
		t.Errorf("the reset marker in Chinese %q", s)
	}
	screenshot("wecombot-conversation-zh-375.png")
	do("back to English", chromedp.Navigate(e.url+"/admin/?lang=en"), visible("main"))

	do("log out", click("#logout"), visible("#password"))
	b.Check()
}

func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	path := filepath.Join(screenshotDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
