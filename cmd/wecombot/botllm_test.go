package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm"
)

const dashscopeKey = "sk-dashscope-never-shown"

// perBotYAML is goodYAML with a top-level llm section and a second bot,
// hr, on DashScope's OpenAI-compatible mode with its own prompt and key;
// extra are more keys of hr's llm.
func perBotYAML(extra ...string) string {
	yml := edit(goodYAML, "api_key:", `api_key: "sk-cfg"`, `system_prompt: "You help everyone."`, "history_turns: 4", "timeout: 30s")
	yml += "  - name: hr\n" +
		"    corp_id: wwcfgcorp\n    agent_id: 1000003\n" +
		`    secret: "` + cfgSecret + "\"\n" + `    token: "` + cfgToken + "\"\n" + `    encoding_aes_key: "` + cfgAESKey + "\"\n" +
		"    llm:\n" +
		"      base_url: \"https://dashscope.aliyuncs.com/compatible-mode/v1\"\n" +
		"      api_key: \"${DASHSCOPE_API_KEY}\"\n" +
		"      model: \"qwen-plus\"\n" +
		"      system_prompt: \"你是公司 HR 助手。\"\n"
	for _, e := range extra {
		yml += "      " + e + "\n"
	}
	return yml
}

var dashscopeEnv = envOf(map[string]string{"DASHSCOPE_API_KEY": dashscopeKey})

// TestBotLLMOverlay: a bot's settings are the llm section overlaid with
// its own keys: what it sets wins, the rest is inherited; a bot without
// llm keys has the section's settings; ${VAR} is expanded as anywhere.
func TestBotLLMOverlay(t *testing.T) {
	cfg, err := ParseConfig([]byte(perBotYAML("retries: 0", "stream: false")), dashscopeEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.BotLLM(0); got != cfg.LLM {
		t.Errorf("helpdesk, without llm keys: %+v, want the section's %+v", got, cfg.LLM)
	}
	hr := cfg.BotLLM(1)
	want := cfg.LLM
	want.BaseURL, want.APIKey, want.Model = "https://dashscope.aliyuncs.com/compatible-mode/v1", dashscopeKey, "qwen-plus"
	want.SystemPrompt, want.Retries, want.Stream = "你是公司 HR 助手。", 0, false
	if hr != want {
		t.Errorf("hr: %+v\nwant %+v", hr, want)
	}
	// Inherited: the section's own values, not the defaults.
	if hr.HistoryTurns != 4 || hr.Timeout != config.Duration(30*time.Second) || hr.MaxConcurrency != cfg.LLM.MaxConcurrency {
		t.Errorf("hr inherits history_turns %d, timeout %s, max_concurrency %d", hr.HistoryTurns, hr.Timeout, hr.MaxConcurrency)
	}
	// The section itself is untouched by the overlay.
	if cfg.LLM.Model != "gpt-4o-mini" || cfg.LLM.APIKey != "sk-cfg" || !cfg.LLM.Stream {
		t.Errorf("llm section changed: %+v", cfg.LLM)
	}
	if w := cfg.warnings(); len(w) != 0 {
		t.Errorf("warnings %q for a base_url ending in /v1", w)
	}
}

// TestBotLLMProblems: a bot's llm keys are checked like the section's and
// named by the bot's key path, each cause once; what a bot inherits is the
// section's problem, reported there only.
func TestBotLLMProblems(t *testing.T) {
	const hr = "config: bots[1] (hr).llm."
	tests := []struct {
		name  string
		yml   string
		env   func(string) (string, bool)
		wants []string // in the one problem
	}{
		{"unknown key", perBotYAML("modle: qwen-max"), dashscopeEnv, []string{"unknown key: line 31: bots[1].llm.modle"}},
		{"unset variable", perBotYAML(), noEnv, []string{hr + "api_key: line 28: ${DASHSCOPE_API_KEY} is not set"}},
		{"retries out of range", perBotYAML("retries: 9"), dashscopeEnv, []string{hr + "retries: must be between 0 and 5, got 9"}},
		{"empty model", strings.Replace(perBotYAML(), `model: "qwen-plus"`, `model: ""`, 1), dashscopeEnv, []string{hr + "model: is empty"}},
		{"not a URL", strings.Replace(perBotYAML(), "https://dashscope.aliyuncs.com/compatible-mode/v1", "dashscope", 1), dashscopeEnv,
			[]string{hr + `base_url: "dashscope" is not an http(s) URL`}},
		{"not a duration", perBotYAML("timeout: soon"), dashscopeEnv, []string{hr + "timeout: line 31:"}},
		{"not a number", perBotYAML("history_turns: many"), dashscopeEnv, []string{hr + `history_turns: line 31: want a number, got "many"`}},
		{"zero max_concurrency", perBotYAML("max_concurrency: 0"), dashscopeEnv, []string{hr + "max_concurrency: must be at least 1, got 0"}},
		{"not keys", withBot("hr", "corp_id: wwcfgcorp", "agent_id: 1000003", `secret: "`+cfgSecret+`"`, `token: "`+cfgToken+`"`,
			`encoding_aes_key: "`+cfgAESKey+`"`, "llm: qwen-plus"), noEnv, []string{hr[:len(hr)-1] + `: line 23: want keys with values (key: value), got "qwen-plus"`}},
		// Inherited: the section's problem, once.
		{"section's problem", edit(perBotYAML(), "history_turns:", "history_turns: -1"), dashscopeEnv,
			[]string{"config: llm.history_turns: must be 0 or more, got -1"}},
		// Two bots on one model share its calls in flight.
		{"max_concurrency differs on one endpoint", withBot("it", "corp_id: wwcfgcorp", "agent_id: 1000004", `secret: "`+cfgSecret+`"`,
			`token: "`+cfgToken+`"`, `encoding_aes_key: "`+cfgAESKey+`"`, "llm: {max_concurrency: 5}"), noEnv,
			[]string{"config: bots[1] (it).llm.max_concurrency: is 5, but bots[0] (helpdesk) calls the same model", "with 2000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yml), tt.env)
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Fatalf("want 1 problem, got %d:\n%s\n%s", len(ps), strings.Join(ps, "\n"), tt.yml)
			}
			for _, w := range tt.wants {
				if !strings.Contains(ps[0], w) {
					t.Errorf("problem %q does not say %q", ps[0], w)
				}
			}
			if strings.Contains(ps[0], dashscopeKey) {
				t.Errorf("problem %q shows the key", ps[0])
			}
		})
	}
}

// TestBotLLMWarning: a bot's base_url is warned about like the section's.
func TestBotLLMWarning(t *testing.T) {
	yml := strings.Replace(perBotYAML(), "compatible-mode/v1", "compatible-mode", 1)
	cfg, err := ParseConfig([]byte(yml), dashscopeEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := "bots[1] (hr).llm.base_url: the path does not end in /v1; OpenAI-compatible APIs usually need it (https://dashscope.aliyuncs.com/compatible-mode/v1)"
	if w := cfg.warnings(); len(w) != 1 || w[0] != want {
		t.Errorf("warnings %q, want %q", w, want)
	}
}

// TestBotModels: the bots of one model endpoint share one Endpoint (one
// client, limiter and health); a bot on the section's own endpoint has
// none (the pipeline's); a bot's pipeline keys are its own either way.
func TestBotModels(t *testing.T) {
	yml := withBot("it", "corp_id: wwcfgcorp", "agent_id: 1000004", `secret: "`+cfgSecret+`"`, `token: "`+cfgToken+`"`,
		`encoding_aes_key: "`+cfgAESKey+`"`, `llm: {system_prompt: "IT only."}`)
	yml += "  - name: hr\n    corp_id: wwcfgcorp\n    agent_id: 1000003\n" +
		`    secret: "` + cfgSecret + "\"\n" + `    token: "` + cfgToken + "\"\n" + `    encoding_aes_key: "` + cfgAESKey + "\"\n" +
		"    llm: {model: qwen-plus, base_url: \"https://dashscope.aliyuncs.com/compatible-mode/v1\", api_key: \"${DASHSCOPE_API_KEY}\", max_concurrency: 7}\n" +
		"  - name: hr2\n    kind: aibot\n" + `    token: "` + cfgToken + "\"\n" + `    encoding_aes_key: "` + cfgAESKey + "\"\n" +
		"    llm: {model: qwen-plus, base_url: \"https://dashscope.aliyuncs.com/compatible-mode/v1\", api_key: \"${DASHSCOPE_API_KEY}\", max_concurrency: 7, history_turns: 1}\n"
	cfg, err := ParseConfig([]byte(yml), dashscopeEnv)
	if err != nil {
		t.Fatal(err)
	}
	models := botModels(cfg, nil)
	if models["helpdesk"].Endpoint != nil || models["it"].Endpoint != nil {
		t.Errorf("helpdesk and it call the section's model: endpoints %+v, %+v", models["helpdesk"].Endpoint, models["it"].Endpoint)
	}
	if models["it"].LLM.SystemPrompt != "IT only." || models["helpdesk"].LLM.SystemPrompt != cfg.LLM.SystemPrompt {
		t.Errorf("prompts: it %q, helpdesk %q", models["it"].LLM.SystemPrompt, models["helpdesk"].LLM.SystemPrompt)
	}
	hr, hr2 := models["hr"].Endpoint, models["hr2"].Endpoint
	if hr == nil || hr != hr2 {
		t.Fatalf("hr and hr2 call one model: endpoints %p, %p", hr, hr2)
	}
	if hr.Model != "qwen-plus" || hr.Host != "dashscope.aliyuncs.com" || !hr.KeySet || hr.MaxConcurrency != 7 ||
		hr.RateLimitWait != time.Duration(cfg.LLM.Timeout) {
		t.Errorf("hr's endpoint %+v", hr)
	}
	if models["hr2"].LLM.HistoryTurns != 1 || models["hr"].LLM.HistoryTurns != cfg.LLM.HistoryTurns {
		t.Errorf("history_turns: hr %d, hr2 %d", models["hr"].LLM.HistoryTurns, models["hr2"].LLM.HistoryTurns)
	}
	// An override (the demo's echo model) answers for every bot.
	echo := botModels(cfg, llm.Echo{})
	if e := echo["hr"].Endpoint; e == nil || e.LLM != (llm.Echo{}) || e.Model != llm.EchoModel || e.Host != "" || e.KeySet {
		t.Errorf("hr on the echo model: %+v", e)
	}
	if ps := probedEndpoints(cfg); len(ps) != 2 || ps[0].users != "bots helpdesk, it" || ps[1].users != "bots hr, hr2" {
		t.Errorf("check -online probes %+v, want the section's model and DashScope's, once each", ps)
	}
}

// TestPanelConfigBotModels: the configuration page shows each bot's
// model, its host and that a key is set, never a key.
func TestPanelConfigBotModels(t *testing.T) {
	cfg, err := ParseConfig([]byte(perBotYAML()), dashscopeEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := panelConfig(cfg, false)
	all := r.Text + fmt.Sprintf("%+v", r.Models) + strings.Join(r.Problems, "\n")
	for _, key := range []string{dashscopeKey, "sk-cfg"} {
		if strings.Contains(all, key) {
			t.Errorf("the configuration page shows the key %q:\n%s", key, all)
		}
	}
	if !strings.Contains(r.Text, `model: "qwen-plus"`) || strings.Count(r.Text, "api_key: '******'") != 2 {
		t.Errorf("the page's text does not show hr's model with both keys masked:\n%s", r.Text)
	}
	if len(r.Models) != 2 {
		t.Fatalf("models %+v", r.Models)
	}
	h, hr := r.Models[0], r.Models[1]
	if h.Bot != "helpdesk" || h.Model != "gpt-4o-mini" || h.Host != "api.openai.com" || !h.KeySet || len(h.Overrides) != 0 {
		t.Errorf("helpdesk: %+v", h)
	}
	if hr.Bot != "hr" || hr.Model != "qwen-plus" || hr.Host != "dashscope.aliyuncs.com" || !hr.KeySet ||
		strings.Join(hr.Overrides, ",") != "base_url,api_key,model,system_prompt" {
		t.Errorf("hr: %+v", hr)
	}
}
