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

// runSimulate plays WeCom for a service under development: it serves
// gettoken and message/send for the configured bots, and turns each input
// line "user: text" into an encrypted callback, printing the answers that the
// service sends back. It runs until ctx ends or the input is closed and the
// last answer has had a moment to arrive.
func runSimulate(ctx context.Context, o simulateOptions) error {
	var apps []wecomsim.App
	var bot *BotConfig
	for i, b := range o.Config.Bots {
		apps = append(apps, wecomsim.App{CorpID: b.CorpID, AgentID: b.AgentID, Secret: b.Secret})
		if b.Name == o.Bot || (o.Bot == "" && i == 0) {
			bot = &o.Config.Bots[i]
		}
	}
	if bot == nil {
		return fmt.Errorf("simulate: no bot named %q in the configuration", o.Bot)
	}
	sim := wecomsim.New(wecomsim.Options{Apps: apps})
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	cb := &wecomsim.Callback{
		URL:   strings.TrimRight(o.Service, "/") + "/wecom/" + bot.Name + "/callback",
		Token: bot.Token, EncodingAESKey: bot.EncodingAESKey, CorpID: bot.CorpID,
	}
	fmt.Fprintf(o.Out, "WeCom simulator on http://%s (set wecom.api_base to it)\ncallbacks go to %s\ntype lines as \"user: text\"\n", ln.Addr(), cb.URL)

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

	lines := bufio.NewScanner(o.In)
	msgID := time.Now().UnixNano()
	posted := int64(0)
	for lines.Scan() && ctx.Err() == nil {
		user, text, ok := strings.Cut(lines.Text(), ":")
		user, text = strings.TrimSpace(user), strings.TrimSpace(text)
		if !ok || user == "" {
			fmt.Fprintln(o.Out, `!! expected "user: text"`)
			continue
		}
		msgID++
		start := time.Now()
		status, body, err := cb.Post(ctx, wecomsim.TextXML(bot.CorpID, user, text, msgID, time.Now().Unix(), bot.AgentID))
		if err != nil {
			fmt.Fprintf(o.Out, "!! callback failed: %v\n", err)
			continue
		}
		fmt.Fprintf(o.Out, "-> %s: %s (callback %d %q in %s)\n", user, text, status, body, time.Since(start).Round(time.Millisecond))
		posted++
	}
	// Input closed: wait a little for the answers still on their way.
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil && printed.Load() < posted && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
