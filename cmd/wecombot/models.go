package main

import (
	"fmt"
	"net/url"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/web"
)

// botModels are the bots' model settings for the pipeline: each bot's
// `llm:` keys over the llm section (Config.BotLLM), the bots calling one
// model endpoint (modelEndpoint, max_concurrency agreed: validate) sharing
// one *adapter.Endpoint, and so one client, one limit of calls in flight
// and one health. A bot calling the section's own endpoint has none: it
// shares the pipeline's. override, when set (demo, tests), is every
// endpoint's completer instead of a client of its own.
func botModels(cfg *Config, override adapter.Completer) map[string]adapter.BotModel {
	own := endpointOf(cfg.LLM)
	endpoints := map[modelEndpoint]*adapter.Endpoint{}
	out := make(map[string]adapter.BotModel, len(cfg.Bots))
	for i, b := range cfg.Bots {
		l := cfg.BotLLM(i)
		bm := adapter.BotModel{LLM: l.LLMConfig}
		if k := endpointOf(l); k != own || l.MaxConcurrency != cfg.LLM.MaxConcurrency {
			if endpoints[k] == nil {
				completer := override
				if completer == nil {
					completer = llm.New(l.Config)
				}
				model, host := shownModel(l.Config, completer)
				endpoints[k] = &adapter.Endpoint{
					Model: model, Host: host, KeySet: l.APIKey != "" && model != llm.EchoModel, KeyName: cfg.botKeyName(i), LLM: completer,
					MaxConcurrency: l.MaxConcurrency, RateLimitWait: time.Duration(l.Timeout),
				}
			}
			bm.Endpoint = endpoints[k]
		}
		out[b.Name] = bm
	}
	return out
}

// shownModel is the model of c, called through completer, as the panel
// shows it: its name and base_url's host; the echo model has no host.
func shownModel(c llm.Config, completer adapter.Completer) (model, host string) {
	if _, ok := completer.(llm.Echo); ok {
		return llm.EchoModel, ""
	}
	return c.Model, urlHost(c.BaseURL)
}

// urlHost is the host (and port) of raw, without what may be a
// credential (a proxy's user and password); empty when raw is no URL.
func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// botModelRows are the bots' models as the configuration page lists them:
// never a key, only whether one is set.
func botModelRows(cfg *Config, echo bool) []web.BotModel {
	rows := make([]web.BotModel, 0, len(cfg.Bots))
	for i, b := range cfg.Bots {
		l := cfg.BotLLM(i)
		r := web.BotModel{Bot: b.Name, Model: l.Model, Host: urlHost(l.BaseURL), KeySet: l.APIKey != "", Overrides: overridden(b), KeyName: cfg.botKeyName(i)}
		if echo {
			r.Model, r.Host, r.KeySet, r.KeyName = llm.EchoModel, "", false, ""
		}
		rows = append(rows, r)
	}
	return rows
}

// botKeyName is where the i-th bot's model key is configured, as hints
// name it: "bots[1] (hr).llm.api_key" when the bot has its own, "" (the
// llm section's) when not. Bots sharing a model endpoint have one key; the
// first of them names it.
func (c *Config) botKeyName(i int) string {
	if !botSets(c.Bots[i])("api_key") {
		return ""
	}
	return c.keyName(fmt.Sprintf("bots[%d].llm.api_key", i))
}
