package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/llm"
)

// checkOnline is `check -online` once the offline check has passed: for
// each bot the one call that tells whether WeCom takes its credentials,
// then one call to the model. An AI bot on the long connection is
// subscribed only when subscribe is set. It prints a line per probe, ok or FAILED
// with what to do, and returns 1 when any failed. Nothing is stored: the
// access token is thrown away, the long connection closed.
func checkOnline(ctx context.Context, path string, cfg *Config, subscribe bool, stdout, stderr io.Writer) int {
	mask := probeSecrets(cfg)
	failed := 0
	report := func(what string, err error, hint string) {
		if err == nil {
			fmt.Fprintf(stdout, "  %s: ok\n", what)
			return
		}
		failed++
		line := fmt.Sprintf("  %s: FAILED: %s", what, adapter.Redact(err.Error()))
		if hint != "" {
			line += "\n    hint: " + hint
		}
		fmt.Fprintln(stdout, mask.Replace(line))
	}
	fmt.Fprintf(stdout, "%s: online checks:\n", path)
	for i, b := range cfg.Bots {
		switch {
		case b.Kind == adapter.KindAIBot && b.Mode == adapter.ModeWebSocket && !subscribe:
			// WeCom keeps one connection per bot, and a service that
			// loses its connection to another waits for a restart.
			fmt.Fprintf(stdout, "  bot %s (AI bot, websocket): not probed: a subscribe would take the long connection from a service running with this bot_id; add -subscribe while it is stopped\n", b.Name)
		case b.Kind == adapter.KindAIBot && b.Mode == adapter.ModeWebSocket:
			fmt.Fprintf(stderr, "%s: warning: %s: the subscribe takes the long connection from a service running with this bot_id, which then stays off until restarted\n", path, cfg.keyName(fmt.Sprintf("bots[%d]", i)))
			err := aibot.Subscribe(ctx, cfg.WeCom.AIBotWSURL, b.BotID, b.Secret, nil)
			report(fmt.Sprintf("bot %s (AI bot, websocket): subscribe", b.Name), err, aibot.Hint(err))
		case b.Kind == adapter.KindAIBot:
			fmt.Fprintf(stdout, "  bot %s (AI bot, callback): nothing to check online; WeCom checks the URL when you save it\n", b.Name)
		default:
			err := adapter.CheckToken(ctx, cfg.WeCom.WeComConfig, b)
			report(fmt.Sprintf("bot %s (app): gettoken", b.Name), err, adapter.Hint(err))
		}
	}
	// One call per model endpoint: the bots sharing one would ask the
	// same question again.
	for _, ep := range probedEndpoints(cfg) {
		err := llm.New(ep.cfg).Probe(ctx)
		report(fmt.Sprintf("model %s at %s (%s): one-token chat completion", ep.cfg.Model, shownURL(ep.cfg.BaseURL), ep.users), err, llm.HintFor(err, ep.keyName))
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "%s: %d online check(s) failed\n", path, failed)
		return 1
	}
	fmt.Fprintf(stdout, "%s: online checks OK\n", path)
	return 0
}

// probedEndpoint is a model endpoint `check -online` calls, and which
// bots call it ("bots helpdesk, hr").
type probedEndpoint struct {
	cfg   llm.Config
	users string
	// keyName is where its key is configured when not llm.api_key.
	keyName string
}

// probedEndpoints are the distinct model endpoints of the bots, in the
// order of the first bot calling each.
func probedEndpoints(cfg *Config) []probedEndpoint {
	var out []probedEndpoint
	var bots [][]string
	index := map[modelEndpoint]int{}
	for i, b := range cfg.Bots {
		l := cfg.BotLLM(i)
		k := endpointOf(l)
		j, ok := index[k]
		if !ok {
			j = len(out)
			index[k] = j
			out = append(out, probedEndpoint{cfg: l.Config, keyName: cfg.botKeyName(i)})
			bots = append(bots, nil)
		}
		bots[j] = append(bots[j], b.Name)
	}
	for j := range out {
		what := "bot "
		if len(bots[j]) > 1 {
			what = "bots "
		}
		out[j].users = what + strings.Join(bots[j], ", ")
	}
	return out
}

// probeSecrets masks what the probes send, in case an answer echoes it
// back (a provider's "Incorrect API key provided: sk-…"): the bots'
// secrets and the model's key. The access token never reaches a line.
// Longer secrets go first, so that one containing another is masked whole.
func probeSecrets(cfg *Config) *strings.Replacer {
	secrets := []string{cfg.LLM.APIKey}
	for i, b := range cfg.Bots {
		secrets = append(secrets, b.Secret, cfg.BotLLM(i).APIKey)
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, s := range secrets {
		if s != "" {
			pairs = append(pairs, s, "******")
		}
	}
	return strings.NewReplacer(pairs...)
}

// shownURL is llm.base_url without what may be a credential: a proxy's
// user and password, or a key in the query.
func shownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "llm.base_url"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
