package adapter

import (
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
)

// Endpoint is a model the pipeline calls: one per distinct base_url,
// api_key, model and timeout of the configuration (cmd works them out of
// the `llm:` section and the bots' `llm:` keys). The bots calling one
// Endpoint share its completer, its limit of calls in flight and its
// health.
type Endpoint struct {
	// Model names the model as the panel shows it (llm.model).
	Model string
	// Host is llm.base_url's host as the panel shows it; empty: none
	// (the offline echo model).
	Host string
	// KeySet says whether llm.api_key is set; the key itself never
	// reaches the adapter's reports.
	KeySet bool
	// KeyName is where its key is configured, as the hints name it when
	// it is not llm.api_key: a bot's own, "bots[1] (hr).llm.api_key".
	KeyName string
	// LLM makes the calls.
	LLM Completer
	// MaxConcurrency bounds its calls in flight (llm.max_concurrency).
	MaxConcurrency int
	// RateLimitWait is PipelineConfig.RateLimitWait for its calls
	// (llm.timeout).
	RateLimitWait time.Duration
}

// BotModel is a bot's own model settings: the `llm:` section overlaid
// with the bot's `llm:` keys.
type BotModel struct {
	// LLM are the pipeline's keys as the bot has them (system_prompt,
	// history_turns, retries, stream…); LLM.MaxConcurrency is the
	// endpoint's.
	LLM LLMConfig
	// Endpoint is where the bot's model is; nil: the pipeline's own
	// (PipelineConfig.Model and the completer NewPipeline is given).
	Endpoint *Endpoint
}

// endpoint is an Endpoint at run time, with what its bots share. Its
// place among the pipeline's endpoints is its health's (ModelHealth.Endpoint).
// Its ready users and running count are guarded by Pipeline.mu.
type endpoint struct {
	Endpoint
	limiter *callLimiter
	health  *modelHealth
	ready   []userKey
	running int
}

// botModel is a bot's settings at run time.
type botModel struct {
	cfg LLMConfig
	ep  *endpoint
}

func newEndpoint(e Endpoint, number int, clock clockwork.Clock, log *slog.Logger) *endpoint {
	if e.MaxConcurrency <= 0 {
		e.MaxConcurrency = DefaultMaxConcurrency
	}
	if e.RateLimitWait <= 0 {
		e.RateLimitWait = time.Minute
	}
	return &endpoint{
		Endpoint: e,
		limiter:  newCallLimiter(e.MaxConcurrency, clock, log.With("model", e.Model)),
		health:   newModelHealth(e, number, clock),
	}
}

// model is the settings of bot: its own, or the pipeline's.
func (p *Pipeline) model(bot string) *botModel {
	if m, ok := p.models[bot]; ok {
		return m
	}
	return p.def
}

// botLLM is the `llm:` keys of the pipeline as bot has them.
func (p *Pipeline) botLLM(bot string) LLMConfig { return p.model(bot).cfg }

// ModelStatus is the health of bot's model endpoint.
func (p *Pipeline) ModelStatus(bot string) ModelHealth { return p.model(bot).ep.health.status() }

// usedEndpoints are the endpoints the configured bots call: the pipeline's
// own only when a bot calls it (or no bot has settings of its own).
func (p *Pipeline) usedEndpoints() []*endpoint {
	used := map[*endpoint]bool{}
	for _, m := range p.models {
		used[m.ep] = true
	}
	if len(p.models) == 0 {
		used[p.def.ep] = true
	}
	var out []*endpoint
	for _, ep := range p.endpoints {
		if used[ep] {
			out = append(out, ep)
		}
	}
	return out
}
