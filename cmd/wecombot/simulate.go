package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// simulateOptions configure `wecombot simulate`.
type simulateOptions struct {
	Config  *Config
	Listen  string // where the fake WeCom API listens (point wecom.api_base here)
	Service string // base URL of the running service
	Bot     string // which bot's callback to drive (default: the first)
	In      io.Reader
	Out     io.Writer
}

// newSimBot is a bot of a made-up corp that exists only in the simulator
// (demo), with fresh secrets.
func newSimBot(name, corpID string, agentID int64) adapter.BotConfig {
	return adapter.BotConfig{Name: name, CorpID: corpID, AgentID: agentID,
		Secret: randomHex(16), Token: randomHex(8), EncodingAESKey: wecomsim.NewEncodingAESKey()}
}

// newSimAIBot is an AI bot in callback mode that exists only in the
// simulator (demo), with fresh secrets and a bot id that looks like one.
func newSimAIBot(name string) adapter.BotConfig {
	return adapter.BotConfig{Name: name, Kind: adapter.KindAIBot, Mode: adapter.ModeCallback,
		Token: randomHex(8), EncodingAESKey: wecomsim.NewEncodingAESKey(), BotID: "aib" + randomHex(12)}
}

// simApp is the simulator's side of bot b: what gettoken checks.
func simApp(b adapter.BotConfig) wecomsim.App {
	return wecomsim.App{CorpID: b.CorpID, AgentID: b.AgentID, Secret: b.Secret}
}

// simCallback is WeCom's door to bot b on the service at base
// (http://host:port).
func simCallback(b adapter.BotConfig, base string) *wecomsim.Callback {
	return &wecomsim.Callback{
		URL:   strings.TrimRight(base, "/") + "/wecom/" + b.Name + "/callback",
		Token: b.Token, EncodingAESKey: b.EncodingAESKey, CorpID: b.CorpID,
	}
}

// simAIBotCallback is WeCom's door to AI bot b on the service at base; sim,
// served at simURL, issues the messages' response_urls (nil: none).
func simAIBotCallback(b adapter.BotConfig, base string, sim *wecomsim.Server, simURL string) *wecomsim.AIBotCallback {
	return &wecomsim.AIBotCallback{
		URL:   strings.TrimRight(base, "/") + "/wecom/" + b.Name + "/callback",
		Token: b.Token, EncodingAESKey: b.EncodingAESKey, BotID: b.BotID, Sim: sim, SimURL: simURL,
	}
}

// serveHandler serves h on addr (the simulator's WeCom API) until the
// returned server is closed, and returns the server and its base URL (for
// wecom.api_base).
func serveHandler(h http.Handler, addr string) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

// runSimulate plays WeCom for a service under development: it serves
// gettoken and message/send for the configured bots, and turns each input
// line "user: text" into an encrypted callback, printing the answers that the
// service sends back. It runs until ctx ends or the input is closed and the
// last answer has had a moment to arrive.
func runSimulate(ctx context.Context, o simulateOptions) error {
	var apps []wecomsim.App
	var accounts []wecomsim.KFAccount
	var bot *adapter.BotConfig
	for i, b := range o.Config.Bots {
		if b.Kind != adapter.KindAIBot {
			apps = append(apps, simApp(b))
			for _, a := range b.KF.Accounts {
				accounts = append(accounts, wecomsim.KFAccount{OpenKfID: a, AgentID: b.AgentID})
			}
		}
		if b.Name == o.Bot || (o.Bot == "" && i == 0) {
			bot = &o.Config.Bots[i]
		}
	}
	if bot == nil {
		return fmt.Errorf("simulate: no bot named %q in the configuration", o.Bot)
	}
	kf := simKF{out: o.Out}
	if bot.Kind != adapter.KindAIBot && bot.KF.Enabled {
		// The customers write to the bot's first account; with none
		// listed the service answers every account, so one is made up.
		if kf.account = simKFAccount; len(bot.KF.Accounts) > 0 {
			kf.account = bot.KF.Accounts[0]
		} else {
			accounts = append(accounts, wecomsim.KFAccount{OpenKfID: kf.account, AgentID: bot.AgentID})
		}
	}
	sim := wecomsim.New(wecomsim.Options{Apps: apps, KFAccounts: accounts})
	kf.sim = sim
	srv, simURL, err := serveHandler(sim.Handler(), o.Listen)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	defer srv.Close()
	if bot.Kind == adapter.KindAIBot {
		return simulateAIBot(ctx, o, *bot, sim, simURL)
	}
	cb := simCallback(*bot, o.Service)
	callbacks := "callbacks go to " + cb.URL
	if kf.account != "" {
		sim.SetKFCallback(bot.AgentID, cb)
		callbacks += "\nlines \"kf:<external_userid>: text\" write to 微信客服 account " + kf.account + " as a WeChat customer"
	}
	printSimulatorHeader(o.Out, simURL, callbacks)

	// Print answers as they arrive.
	printed := atomic.Int64{}
	answers, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for n := 1; ; n++ {
			sent, err := sim.WaitDelivered(answers, n)
			if err != nil {
				return
			}
			s := sent[n-1]
			fmt.Fprintf(o.Out, "<- %s: %s\n", s.ToUser, s.Content)
			printed.Add(1)
		}
	}()
	if kf.account != "" {
		go kf.printAnswers(answers, &printed)
	}

	msgID := time.Now().UnixNano()
	posted := int64(0)
	readLines(ctx, o, func(user, text string) {
		if customer, text, ok := strings.Cut(text, ":"); user == "kf" && ok && kf.account != "" {
			if kf.write(ctx, strings.TrimSpace(customer), strings.TrimSpace(text)) {
				posted++
			}
			return
		}
		msgID++
		start := time.Now()
		status, body, err := cb.Post(ctx, wecomsim.TextXML(bot.CorpID, user, text, msgID, time.Now().Unix(), bot.AgentID))
		if err != nil {
			fmt.Fprintf(o.Out, "!! callback failed: %v\n", err)
			return
		}
		fmt.Fprintf(o.Out, "-> %s: %s (callback %d %q in %s)\n", user, text, status, body, time.Since(start).Round(time.Millisecond))
		posted++
	})
	// Input closed: wait a little for the answers still on their way.
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil && printed.Load() < posted && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// simulateAIBot is runSimulate for an AI bot in callback mode: each line
// is a message whose stream is polled to the end, then printed with what
// came through its response_url.
func simulateAIBot(ctx context.Context, o simulateOptions, bot adapter.BotConfig, sim *wecomsim.Server, simURL string) error {
	cb := simAIBotCallback(bot, o.Service, sim, simURL)
	printSimulatorHeader(o.Out, simURL, "AI bot "+bot.Name+": callbacks go to "+cb.URL+", response_urls to the simulator")
	readLines(ctx, o, func(user, text string) {
		start := time.Now()
		ex := cb.Post(ctx, wecomsim.AIBotText(bot.BotID, user, text))
		last, ok := ex.Last()
		if !ok {
			fmt.Fprintf(o.Out, "!! callback failed: %v\n", ex.Err())
			return
		}
		fmt.Fprintf(o.Out, "-> %s: %s (%d replies in %s)\n", user, text, len(ex.Replies()), time.Since(start).Round(time.Millisecond))
		fmt.Fprintf(o.Out, "<- %s: %s\n", user, last.Content)
		// The rest of a long answer follows the stream's end.
		awaitResponseURL(ctx, sim, ex.MsgID)
		for _, r := range sim.AIBotResponses(ex.MsgID) {
			fmt.Fprintf(o.Out, "<- %s (response_url): %s\n", user, r.Content)
		}
		if err := ex.Err(); err != nil {
			fmt.Fprintf(o.Out, "!! %v\n", err)
		}
	})
	return nil
}

// printSimulatorHeader says where the simulator listens, what the
// service's configuration needs, and where callbacks go.
func printSimulatorHeader(out io.Writer, simURL, callbacks string) {
	fmt.Fprintf(out, "WeCom simulator on %s; in the service's configuration:\n"+
		"  wecom:\n    api_base: %q\n    simulator: true   # the panel's \"chat as a WeCom user\" page\n"+
		"%s\ntype lines as \"user: text\"\n", simURL, simURL, callbacks)
}

// readLines calls send with each input line "user: text" until the input
// ends or ctx does, and complains about other lines.
func readLines(ctx context.Context, o simulateOptions, send func(user, text string)) {
	lines := bufio.NewScanner(o.In)
	for lines.Scan() && ctx.Err() == nil {
		user, text, ok := strings.Cut(lines.Text(), ":")
		user, text = strings.TrimSpace(user), strings.TrimSpace(text)
		if !ok || user == "" {
			fmt.Fprintln(o.Out, `!! expected "user: text"`)
			continue
		}
		send(user, text)
	}
}

// simKFAccount is the 微信客服 account `simulate` makes up for an app whose
// kf.accounts is empty (every account that calls back is answered).
const simKFAccount = "wkSimulate000000000000000000KF01"

// simKF is `simulate`'s 微信客服 side: lines "kf:<external_userid>: text"
// are a WeChat customer writing to account, announced to the app's
// callback URL; the service pulls them and answers at kf/send_msg.
type simKF struct {
	sim     *wecomsim.Server
	account string // "" when the bot has no kf
	out     io.Writer
}

// write stores the customer's text and announces it; false if the
// callback failed.
func (k simKF) write(ctx context.Context, customer, text string) bool {
	start := time.Now()
	if _, err := k.sim.KFCustomerWrites(ctx, k.account, customer, text); err != nil {
		fmt.Fprintf(k.out, "!! kf callback failed: %v\n", err)
		return false
	}
	fmt.Fprintf(k.out, "-> kf %s: %s (kf_msg_or_event callback answered in %s)\n", customer, text, time.Since(start).Round(time.Millisecond))
	return true
}

// printAnswers prints what customers receive at kf/send_msg until ctx ends.
func (k simKF) printAnswers(ctx context.Context, printed *atomic.Int64) {
	for n := 0; ; {
		if k.sim.KFWait(ctx, func() bool { return len(k.sim.KFReceived(k.account, "")) > n }) != nil {
			return
		}
		got := k.sim.KFReceived(k.account, "")
		for _, m := range got[n:] {
			fmt.Fprintf(k.out, "<- kf %s: %s\n", m.ToUser, m.Content)
			printed.Add(1)
		}
		n = len(got)
	}
}
