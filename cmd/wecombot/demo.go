package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm"
)

// Demo identities: a made-up corp and app that live only in the simulator.
const (
	demoCorp  = "wwdemo0000000001"
	demoAgent = 1000002
	demoBot   = "demo"
	// demoAIBot is the AI bot in callback mode beside the app.
	demoAIBot = "assistant"
	// demoKF is the demo app's 微信客服 account, whose customers are
	// answered through kf/sync_msg and kf/send_msg.
	demoKF = "wkDemo0000000000000000000000KF01"
	// demoKFWelcome is kf.welcome: sent on enter_session's welcome_code.
	demoKFWelcome = "您好，这里是 wecombot 演示的微信客服，直接发送文字即可。/ Hello from the wecombot demo's WeChat customer service."
	// demoPace spaces the pieces of the echo model's answer, so the AI
	// bot's stream is seen growing on the chat page (WeCom polls about
	// once a second).
	demoPace = 700 * time.Millisecond
)

// demo is the service wired to an in-process WeCom simulator, with a
// throwaway database. The service talks to the simulator only through
// wecom.api_base and its callback URL, exactly as to WeCom.
type demo struct {
	Main     *Main
	Sim      *wecomsim.Server
	Callback *wecomsim.Callback
	AIBot    *wecomsim.AIBotCallback // WeCom's door to the AI bot, issuing response_urls
	Chat     *simChat                // the panel's "chat as a WeCom user"
	Password string
	Model    string

	simServer *http.Server
	dir       string
}

type demoOptions struct {
	Addr       string // service address
	ConfigPath string // optional: its llm section is used
	Getenv     func(string) string
	Log        io.Writer
}

func startDemo(ctx context.Context, o demoOptions) (*demo, error) {
	dir, err := os.MkdirTemp("", "wecombot-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	bot := newSimBot(demoBot, demoCorp, demoAgent)
	bot.KF = adapter.KFConfig{Enabled: true, Accounts: []string{demoKF}, Welcome: demoKFWelcome}
	aiBot := newSimAIBot(demoAIBot)
	d.Password = randomHex(6)
	d.Sim = wecomsim.New(wecomsim.Options{
		Apps:       []wecomsim.App{simApp(bot)},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: demoKF, AgentID: demoAgent, Name: "wecombot 演示客服"}},
		// Short-lived tokens, so the proactive refresh shows in the panel within minutes.
		TokenLifetime: 2 * time.Minute,
	})
	var simURL string
	if d.simServer, simURL, err = serveHandler(d.Sim.Handler(), "127.0.0.1:0"); err != nil {
		return nil, err
	}

	cfg := defaults()
	cfg.Server.Addr = o.Addr
	cfg.Storage.DSN = dir + "/demo.db"
	cfg.WeCom.APIBase = simURL
	cfg.WeCom.Simulator = true // what the panel's configuration page shows; Main.Simulator below is the chat
	cfg.Admin.Password = d.Password
	cfg.Replies.Welcome = "欢迎使用 wecombot 演示！直接发送文字即可。/ Welcome to the wecombot demo."
	cfg.Bots = []adapter.BotConfig{bot, aiBot}
	useReal := false
	if o.ConfigPath != "" {
		// Only the llm section of the given file is used; its other
		// problems (bots of a real corp…) do not matter to the demo.
		if fileCfg, err := LoadConfig(o.ConfigPath); fileCfg != nil {
			cfg.LLM = fileCfg.LLM
			useReal = true
		} else {
			return nil, err
		}
	} else if key := o.Getenv("OPENAI_API_KEY"); key != "" {
		cfg.LLM.APIKey = key
		if u := o.Getenv("OPENAI_BASE_URL"); u != "" {
			cfg.LLM.BaseURL = u
		}
		if m := o.Getenv("OPENAI_MODEL"); m != "" {
			cfg.LLM.Model = m
		}
		useReal = true
	}
	if problems := cfg.validate(); len(problems) > 0 {
		return nil, fmt.Errorf("demo configuration: %v", problems)
	}
	d.Main = NewMain(&cfg, o.Log)
	d.Chat = newSimChat(localDeliveries{sim: d.Sim, url: simURL}, cfg.Bots)
	d.Main.Simulator = d.Chat
	d.Model = cfg.LLM.Model
	if !useReal {
		d.Main.LLM = llm.Echo{Pace: demoPace}
		d.Model = "offline echo model"
		cfg.LLM.Vision = true // the echo model answers images with their type and size
	}
	if err := d.Main.Open(ctx); err != nil {
		return nil, err
	}
	d.Callback = simCallback(bot, "http://"+d.Main.Addr)
	// The account's news goes to the app's callback URL, as in the admin
	// console; the chat page replaces it with its own for each exchange.
	d.Sim.SetKFCallback(demoAgent, simCallback(bot, "http://"+d.Main.Addr))
	d.AIBot = simAIBotCallback(aiBot, "http://"+d.Main.Addr, d.Sim, simURL)
	ok = true
	return d, nil
}

// Close stops the service and the simulator and removes the database.
func (d *demo) Close() error {
	var err error
	if d.Main != nil {
		err = d.Main.Close()
	}
	if d.simServer != nil {
		_ = d.simServer.Close()
	}
	_ = os.RemoveAll(d.dir)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runDemo is `wecombot demo`: it prints where to look and runs until ctx ends.
func runDemo(ctx context.Context, o demoOptions, stdout io.Writer) int {
	d, err := startDemo(ctx, o)
	if err != nil {
		fmt.Fprintf(o.Log, "wecombot demo: %v\n", err)
		return 1
	}
	base := "http://" + d.Main.Addr
	fmt.Fprintf(stdout, `wecombot demo is running (model: %s)
  admin panel:   %s/admin/   login: admin / %s
  admin API:     curl -u admin:%s %s/api/bots
  callback URLs: %s (self-built app %q, and its 微信客服 account %s)
                 %s (AI bot %q, callback mode)
  chat as a user or a WeChat customer: %s/admin/chat
  WeCom simulator (gettoken, message/send, response_url, kf/sync_msg, kf/send_msg): %s
Press Ctrl+C to stop; the demo database is thrown away.
`, d.Model, base, d.Password, d.Password, base, d.Callback.URL, demoBot, demoKF, d.AIBot.URL, demoAIBot, base, d.Main.Config.WeCom.APIBase)
	// A first message, so there is something to see at once.
	xml := wecomsim.TextXML(demoCorp, "demo-user", "你好，wecombot！", time.Now().UnixNano(), time.Now().Unix(), demoAgent)
	if status, _, err := d.Callback.Post(ctx, xml); err != nil || status != http.StatusOK {
		fmt.Fprintf(o.Log, "wecombot demo: first message: status %d: %v\n", status, err)
	}
	<-ctx.Done()
	if err := d.Close(); err != nil {
		fmt.Fprintf(o.Log, "wecombot demo: %v\n", err)
		return 1
	}
	return 0
}
