package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/storage"
)

// Values a configuration error must never echo.
const (
	cfgAESKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	cfgSecret   = "cfg-app-secret-never-echoed"
	cfgToken    = "cfgCallbackTokenNeverEchoed"
	cfgPassword = "cfg-admin-pw-never-echoed"
)

// cfgSecrets are the secrets of goodYAML plus the bad AES keys of the tests.
var cfgSecrets = []string{cfgAESKey, cfgSecret, cfgToken, cfgPassword, cfgAESKey[:42], "abcdefghijklmnopqrstuvwxyz0123456789ABC*EFG"}

// goodYAML is a complete valid configuration; tests edit one line of it.
const goodYAML = `server:
  addr: "127.0.0.1:0"
wecom:
  api_base: "https://qyapi.weixin.qq.com"
  token_refresh_before: 5m
llm:
  api_key: "sk-cfg"
admin:
  password: "` + cfgPassword + `"
bots:
  - name: helpdesk
    corp_id: wwcfgcorp
    agent_id: 1000002
    secret: "` + cfgSecret + `"
    token: "` + cfgToken + `"
    encoding_aes_key: "` + cfgAESKey + `"
`

func noEnv(string) (string, bool) { return "", false }

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// problems splits a joined configuration error into its problems.
func problems(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
	} else {
		out = append(out, err.Error())
	}
	for _, s := range cfgSecrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error echoes a secret %q:\n%v", s, err)
		}
	}
	return out
}

// edit replaces the first line of yml that starts with old (after its
// indentation) by the given lines, keeping the indentation.
func edit(yml, old string, lines ...string) string {
	var out []string
	found := false
	for _, l := range strings.Split(yml, "\n") {
		trimmed := strings.TrimLeft(l, " ")
		if !found && strings.HasPrefix(trimmed, old) {
			found = true
			indent := l[:len(l)-len(trimmed)]
			for _, n := range lines {
				out = append(out, indent+n)
			}
			continue
		}
		out = append(out, l)
	}
	if !found {
		panic("test bug: no line " + old + " in the configuration")
	}
	return strings.Join(out, "\n")
}

func TestShippedConfig(t *testing.T) {
	env := map[string]string{
		"OPENAI_API_KEY":          "sk-shipped",
		"WECOMBOT_ADMIN_PASSWORD": cfgPassword,
		"WECOM_CORP_ID":           "wwshipped",
		"WECOM_SECRET":            cfgSecret,
		"WECOM_CALLBACK_TOKEN":    cfgToken,
		"WECOM_AES_KEY":           cfgAESKey,
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := LoadConfig(filepath.Join("..", "..", "config.yaml"))
	if err != nil {
		t.Fatalf("the shipped config.yaml does not validate:\n%v", err)
	}

	// The documented defaults, as README and config.yaml state them.
	checks := []struct {
		key       string
		got, want any
	}{
		{"server.addr", cfg.Server.Addr, ":8080"},
		{"server.shutdown_timeout", cfg.Server.ShutdownTimeout, config.Duration(20 * time.Second)},
		{"storage.driver", cfg.Storage.Driver, "sqlite"},
		{"storage.dsn", cfg.Storage.DSN, "data/wecombot.db"},
		{"storage.retention", cfg.Storage.Retention, config.Duration(720 * time.Hour)},
		{"wecom.api_base", cfg.WeCom.APIBase, "https://qyapi.weixin.qq.com"},
		{"wecom.token_refresh_before", cfg.WeCom.TokenRefreshBefore, config.Duration(5 * time.Minute)},
		{"wecom.request_timeout", cfg.WeCom.RequestTimeout, config.Duration(10 * time.Second)},
		{"wecom.simulator", cfg.WeCom.Simulator, false},
		{"llm.base_url", cfg.LLM.BaseURL, "https://api.openai.com/v1"},
		{"llm.api_key", cfg.LLM.APIKey, "sk-shipped"},
		{"llm.model", cfg.LLM.Model, "gpt-4o-mini"},
		{"llm.system_prompt", cfg.LLM.SystemPrompt, "You are a helpful assistant."},
		{"llm.timeout", cfg.LLM.Timeout, config.Duration(60 * time.Second)},
		{"llm.history_turns", cfg.LLM.HistoryTurns, 10},
		{"llm.retries", cfg.LLM.Retries, 2},
		{"redis.addr", cfg.Redis.Addr, ""},
		{"admin.username", cfg.Admin.Username, "admin"},
		{"admin.password", cfg.Admin.Password, cfgPassword},
		{"llm.max_concurrency", cfg.LLM.MaxConcurrency, adapter.DefaultMaxConcurrency},
		{"pipeline.give_up_after", cfg.Pipeline.GiveUpAfter, config.Duration(24 * time.Hour)},
		{"pipeline.lease", cfg.Pipeline.Lease, config.Duration(15 * time.Second)},
		{"replies.welcome", cfg.Replies.Welcome, ""},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "text"},
		{"bots", len(cfg.Bots), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", c.key, c.got, c.want)
		}
	}
	want := adapter.BotConfig{Name: "helpdesk", Kind: adapter.KindApp, CorpID: "wwshipped", AgentID: 1000002, Secret: cfgSecret, Token: cfgToken, EncodingAESKey: cfgAESKey}
	if len(cfg.Bots) == 1 && !reflect.DeepEqual(cfg.Bots[0], want) {
		t.Errorf("bots[0] = %+v, want %+v", cfg.Bots[0], want)
	}

	// config.yaml spells out every default of the code: they must agree.
	got := *cfg
	got.LLM.APIKey, got.Admin.Password, got.Bots = "", "", nil
	if d := defaults(); !reflect.DeepEqual(got, d) {
		t.Errorf("config.yaml and defaults() disagree:\nfile:     %+v\ndefaults: %+v", got, d)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	yml := "admin: {password: pw}\nbots:\n  - {name: a, corp_id: c, agent_id: 1, secret: s, token: t, encoding_aes_key: " + cfgAESKey + "}\n"
	cfg, err := ParseConfig([]byte(yml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got := *cfg
	got.Admin.Password, got.Bots = "", nil
	if d := defaults(); !reflect.DeepEqual(got, d) {
		t.Errorf("a minimal file does not get the defaults:\ngot:  %+v\nwant: %+v", got, d)
	}
}

func TestParseConfigEmpty(t *testing.T) {
	for _, yml := range []string{"", "# nothing but a comment\n", "\n\n"} {
		_, err := ParseConfig([]byte(yml), noEnv)
		ps := problems(t, err)
		all := strings.Join(ps, "\n")
		if len(ps) != 2 || !strings.Contains(all, "admin.password") || !strings.Contains(all, "bots: no bot is configured") {
			t.Errorf("ParseConfig(%q): want the two missing things reported, got %d problem(s):\n%s", yml, len(ps), all)
		}
	}
}

func TestParseConfigExpand(t *testing.T) {
	tests := []struct {
		name  string
		edits [][]string // old line, new line
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{
			name:  "set variables, alone and inside text",
			edits: [][]string{{"secret:", `secret: "${S}"`}, {"api_key:", "api_key: sk-${K}-x"}, {"corp_id:", "corp_id: ${C}"}},
			env:   map[string]string{"S": cfgSecret, "K": "key", "C": "wwfromenv"},
			check: func(t *testing.T, c *Config) {
				if c.Bots[0].Secret != cfgSecret || c.LLM.APIKey != "sk-key-x" || c.Bots[0].CorpID != "wwfromenv" {
					t.Errorf("secret %q, api_key %q, corp_id %q", c.Bots[0].Secret, c.LLM.APIKey, c.Bots[0].CorpID)
				}
			},
		},
		{
			name:  "a bare $ is left alone",
			edits: [][]string{{"password:", `password: "pa$$w0rd$"`}, {"api_key:", "api_key: $HOME-$K"}},
			env:   map[string]string{"HOME": "/root", "K": "k"},
			check: func(t *testing.T, c *Config) {
				if c.Admin.Password != "pa$$w0rd$" || c.LLM.APIKey != "$HOME-$K" {
					t.Errorf("password %q, api_key %q", c.Admin.Password, c.LLM.APIKey)
				}
			},
		},
		{
			name: "values that look like numbers, booleans or null stay strings",
			edits: [][]string{
				{"corp_id:", "corp_id: ${NUM}"}, {"secret:", "secret: ${ZERO}"}, {"token:", "token: '${BOOL}'"},
				{"api_key:", "api_key: ${NULL}"}, {"password:", "password: ${FLOAT}"}, {"admin:", "admin:", `  username: "${HEX}"`},
			},
			env: map[string]string{"NUM": "12345", "ZERO": "007", "BOOL": "true", "NULL": "null", "FLOAT": "1e3", "HEX": "0x1F"},
			check: func(t *testing.T, c *Config) {
				b := c.Bots[0]
				if b.CorpID != "12345" || b.Secret != "007" || b.Token != "true" || c.LLM.APIKey != "null" ||
					c.Admin.Password != "1e3" || c.Admin.Username != "0x1F" {
					t.Errorf("corp_id %q secret %q token %q api_key %q password %q username %q",
						b.CorpID, b.Secret, b.Token, c.LLM.APIKey, c.Admin.Password, c.Admin.Username)
				}
			},
		},
		{
			name:  "a number key may come from the environment",
			edits: [][]string{{"agent_id:", "agent_id: ${AGENT}"}, {"api_key:", "api_key: sk", "history_turns: ${TURNS}"}},
			env:   map[string]string{"AGENT": "1000005", "TURNS": "3"},
			check: func(t *testing.T, c *Config) {
				if c.Bots[0].AgentID != 1000005 || c.LLM.HistoryTurns != 3 {
					t.Errorf("agent_id %d, history_turns %d", c.Bots[0].AgentID, c.LLM.HistoryTurns)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := goodYAML
			for _, e := range tt.edits {
				yml = edit(yml, e[0], e[1:]...)
			}
			cfg, err := ParseConfig([]byte(yml), envOf(tt.env))
			if ps := problems(t, err); len(ps) > 0 {
				t.Fatalf("problems:\n%s\nin:\n%s", strings.Join(ps, "\n"), yml)
			}
			tt.check(t, cfg)
		})
	}
}

// TestParseConfigUnsetVariable: an unset variable is reported once, on the
// key that names it, and is the only problem of that key (not also "is
// empty", "want a number"…), however many keys use it.
func TestParseConfigUnsetVariable(t *testing.T) {
	tests := []struct {
		name  string
		edits [][]string // old line, new lines
		want  []string
	}{
		{"a secret and the model key", [][]string{{"secret:", `secret: "${WECOM_SECRET}"`}, {"api_key:", "api_key: ${OPENAI_API_KEY}"}},
			[]string{
				"config: llm.api_key: line 7: ${OPENAI_API_KEY} is not set",
				"config: bots[0] (helpdesk).secret: line 14: ${WECOM_SECRET} is not set",
			}},
		{"one variable, two keys", [][]string{{"secret:", "secret: ${WECOM_SECRET}"}, {"token:", "token: ${WECOM_SECRET}"}},
			[]string{"config: bots[0] (helpdesk).secret: line 14: ${WECOM_SECRET} is not set; also used by bots[0] (helpdesk).token (line 15)"}},
		{"a number", [][]string{{"agent_id:", "agent_id: ${WECOM_AGENT_ID}"}},
			[]string{"config: bots[0] (helpdesk).agent_id: line 13: ${WECOM_AGENT_ID} is not set"}},
		{"the AES key", [][]string{{"encoding_aes_key:", "encoding_aes_key: ${WECOM_AES_KEY}"}},
			[]string{"config: bots[0] (helpdesk).encoding_aes_key: line 16: ${WECOM_AES_KEY} is not set"}},
		{"the listen address", [][]string{{"addr:", "addr: ${ADDR}"}},
			[]string{"config: server.addr: line 2: ${ADDR} is not set"}},
		{"a duration", [][]string{{"token_refresh_before:", "token_refresh_before: ${REFRESH}"}},
			[]string{"config: wecom.token_refresh_before: line 5: ${REFRESH} is not set"}},
		{"two variables in one value", [][]string{{"secret:", "secret: ${A}-${B}"}},
			[]string{"config: bots[0] (helpdesk).secret: line 14: ${A} is not set", "config: bots[0] (helpdesk).secret: line 14: ${B} is not set"}},
		{"a bot's name", [][]string{{"- name:", "- name: ${BOT}"}},
			[]string{"config: bots[0].name: line 11: ${BOT} is not set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := goodYAML
			for _, e := range tt.edits {
				yml = edit(yml, e[0], e[1:]...)
			}
			_, err := ParseConfig([]byte(yml), envOf(map[string]string{"UNRELATED": "x"}))
			if ps := problems(t, err); !reflect.DeepEqual(ps, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s\nin:\n%s", strings.Join(ps, "\n"), strings.Join(tt.want, "\n"), yml)
			}
		})
	}
}

// TestParseConfigTypes: a value the key's type cannot hold is reported in
// words, with its key and line, once; the key keeps its default.
func TestParseConfigTypes(t *testing.T) {
	tests := []struct {
		name  string
		edits [][]string
		env   map[string]string
		want  []string
	}{
		{"text for a number", [][]string{{"agent_id:", "agent_id: abc"}}, nil,
			[]string{`config: bots[0] (helpdesk).agent_id: line 13: want a number, got "abc"`}},
		{"a fraction for a number", [][]string{{"api_key:", "api_key: sk", "retries: 1.5"}}, nil,
			[]string{`config: llm.retries: line 8: want a whole number, got "1.5"`}},
		{"a number from the environment", [][]string{{"agent_id:", "agent_id: ${AGENT}"}}, map[string]string{"AGENT": "x1"},
			[]string{`config: bots[0] (helpdesk).agent_id: line 13: want a number, got "x1"`}},
		{"text for a boolean", [][]string{{"api_key:", "api_key: sk", "stream: maybe"}}, nil,
			[]string{`config: llm.stream: line 8: want true or false, got "maybe"`}},
		{"a list for a boolean", [][]string{{"token_refresh_before:", "token_refresh_before: 5m", "simulator: [true]"}}, nil,
			[]string{`config: wecom.simulator: line 6: want true or false, got a list`}},
		{"a mapping for text", [][]string{{"api_key:", "api_key: {key: sk}"}}, nil,
			[]string{`config: llm.api_key: line 7: want text, got keys with values`}},
		{"a list for text", [][]string{{"- name:", "- name: [helpdesk]"}}, nil,
			[]string{`config: bots[0].name: line 11: want text, got a list`}},
		{"text for a list", [][]string{{"bots:", "bots: helpdesk", "other:"}}, nil,
			[]string{`config: unknown key: line 11: other`, `config: bots: line 10: want a list, got "helpdesk"`}},
		{"text for a section", [][]string{{"llm:", "llm: gpt-4o", "other:"}}, nil,
			[]string{`config: unknown key: line 7: other`, `config: llm: line 6: want keys with values (key: value), got "gpt-4o"`}},
		{"text for a bot", [][]string{{"bots:", "bots:", "  - helpdesk"}}, nil,
			[]string{`config: bots[0]: line 11: want keys with values (key: value), got "helpdesk"`}},
		{"a whole number written as a fraction", [][]string{{"agent_id:", "agent_id: 1000002.0"}}, nil, nil},
		{"two on a line", [][]string{{"server:", "pipeline: {lease: 1x, give_up_after: no}", "server:"}}, nil,
			[]string{`config: pipeline.lease: line 1: "1x" is not a duration (examples: 90s, 5m, 24h)`,
				`config: pipeline.give_up_after: line 1: "no" is not a duration (examples: 90s, 5m, 24h)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yml := goodYAML
			for _, e := range tt.edits {
				yml = edit(yml, e[0], e[1:]...)
			}
			cfg, err := ParseConfig([]byte(yml), envOf(tt.env))
			if ps := problems(t, err); !reflect.DeepEqual(ps, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s\nin:\n%s", strings.Join(ps, "\n"), strings.Join(tt.want, "\n"), yml)
			}
			if d := defaults(); cfg.LLM.Retries != d.LLM.Retries || cfg.LLM.Stream != d.LLM.Stream || cfg.WeCom.Simulator != d.WeCom.Simulator {
				t.Errorf("a bad value did not keep the default: %+v", cfg)
			}
		})
	}
}

func TestParseConfigUnknownKeys(t *testing.T) {
	tests := []struct {
		name      string
		old       string
		new       []string
		key, line string
	}{
		{"top level", "server:", []string{"frobnicate: 1", "server:"}, "frobnicate", "line 1:"},
		{"llm.modle", "api_key:", []string{"api_key: sk", "modle: gpt-4o"}, "modle", "line 8:"},
		{"bots[0].secrte", "secret:", []string{"secrte: x", "secret: s"}, "secrte", "line 14:"},
		{"server.adress", "addr:", []string{`adress: ":80"`}, "adress", "line 2:"},
		{"wecom.simulater", "token_refresh_before:", []string{"token_refresh_before: 5m", "simulater: true"}, "wecom.simulater", "line 6:"},
		{"llm.timout", "api_key:", []string{"api_key: sk", "timout: 60s"}, "llm.timout", "line 8:"},
		{"admin.user", "password:", []string{"user: boss", "password: pw"}, "admin.user", "line 9:"},
		{"replies.welcom", "admin:", []string{"replies: {welcom: hi}", "admin:"}, "replies.welcom", "line 8:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(edit(goodYAML, tt.old, tt.new...)), noEnv)
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Fatalf("want 1 problem, got %d:\n%s", len(ps), strings.Join(ps, "\n"))
			}
			for _, w := range []string{"unknown key", tt.key, tt.line} {
				if !strings.Contains(ps[0], w) {
					t.Errorf("problem %q does not say %q", ps[0], w)
				}
			}
		})
	}
}

func TestParseConfigValidation(t *testing.T) {
	tests := []struct {
		name     string
		yml      string
		key, say string
	}{
		{"42-character AES key", edit(goodYAML, "encoding_aes_key:", `encoding_aes_key: "`+cfgAESKey[:42]+`"`),
			"bots[0] (helpdesk).encoding_aes_key", "must be 43 characters, got 42"},
		{"AES key not base64", edit(goodYAML, "encoding_aes_key:", `encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABC*EFG"`),
			"bots[0] (helpdesk).encoding_aes_key", "is not a valid EncodingAESKey"},
		{"duplicate bot name", goodYAML + `  - {name: helpdesk, corp_id: c2, agent_id: 2, secret: s2, token: t2, encoding_aes_key: "` + cfgAESKey + "\"}\n",
			"bots[1] (helpdesk).name", `"helpdesk" is used by another bot`},
		{"bot name with capitals", edit(goodYAML, "- name:", "- name: Help.Desk"),
			"bots[0] (Help.Desk).name", "may only contain a-z, 0-9, _ and -"},
		{"bot name with a slash", edit(goodYAML, "- name:", "- name: help/desk"),
			"bots[0] (help/desk).name", "may only contain a-z, 0-9, _ and -"},
		{"missing secret", edit(goodYAML, "secret:"), "bots[0] (helpdesk).secret", "is empty"},
		{"empty secret", edit(goodYAML, "secret:", `secret: ""`), "bots[0] (helpdesk).secret", "is empty"},
		{"agent_id 0", edit(goodYAML, "agent_id:", "agent_id: 0"), "bots[0] (helpdesk).agent_id", "positive number"},
		{"unparsable duration", edit(goodYAML, "token_refresh_before:", "token_refresh_before: 5x"),
			"wecom.token_refresh_before", `"5x" is not a duration`},
		{"zero timeout", edit(goodYAML, "llm:", "llm:", "  timeout: 0"), "llm.timeout", "must be positive, got 0"},
		{"lease below 1s", edit(goodYAML, "server:", "pipeline:", "  lease: 500ms", "server:"),
			"pipeline.lease", `must be a duration from 1s to 10m, got "500ms"`},
		{"api_base without scheme", edit(goodYAML, "api_base:", "api_base: qyapi.weixin.qq.com"),
			"wecom.api_base", `"qyapi.weixin.qq.com" is not an http(s) URL`},
		{"simulator at WeCom itself", edit(goodYAML, "token_refresh_before:", "token_refresh_before: 5m", "simulator: true"),
			"wecom.simulator", `is true, but wecom.api_base "https://qyapi.weixin.qq.com" is WeCom itself`},
		{"retention not a duration", edit(goodYAML, "server:", "storage:", "  retention: 30d", "server:"),
			"storage.retention", `"30d" is not a duration`},
		{"negative retention", edit(goodYAML, "server:", "storage:", "  retention: -1h", "server:"),
			"storage.retention", "must be 0 (keep everything) or positive"},
		{"retention shorter than WeCom's retries", edit(goodYAML, "server:", "storage:", "  retention: 10m", "server:"),
			"storage.retention", "at least 1h"},
		{"empty admin password", edit(goodYAML, "password:", `password: ""`), "admin.password", "is empty"},
		{"pprof_addr without a port", edit(goodYAML, "addr:", `addr: "127.0.0.1:0"`, `pprof_addr: "localhost"`),
			"server.pprof_addr", `"localhost" is not host:port`},
		{"pprof_addr on the service's address", edit(goodYAML, "addr:", `addr: ":8080"`, `pprof_addr: ":8080"`),
			"server.pprof_addr", "needs a listener of its own"},
		{"pipeline.workers, replaced", edit(goodYAML, "server:", "pipeline:", "  workers: 16", "server:"),
			"pipeline.workers", "is no longer a setting: every user with a message waits on the model at once, up to llm.max_concurrency"},
		{"max_concurrency 0", edit(goodYAML, "llm:", "llm:", "  max_concurrency: 0"),
			"llm.max_concurrency", "must be at least 1"},
		{"no bots", goodYAML[:strings.Index(goodYAML, "bots:")] + "bots: []\n", "bots", "no bot is configured"},
		{"addr without a colon", edit(goodYAML, "addr:", `addr: "8080"`),
			"server.addr", `"8080" is not host:port: write ":8080" (every interface) or "127.0.0.1:8080" (this machine only)`},
		{"addr without a port", edit(goodYAML, "addr:", `addr: "localhost"`),
			"server.addr", `"localhost" is not host:port: write ":8080" (every interface) or "127.0.0.1:8080" (this machine only)`},
		{"addr with a port that is not one", edit(goodYAML, "addr:", `addr: "127.0.0.1:99999"`),
			"server.addr", `"127.0.0.1:99999" is not host:port`},
		{"redis.addr without a port", edit(goodYAML, "server:", "redis: {addr: redis}", "server:"),
			"redis.addr", `"redis" is not host:port (e.g. redis:6379)`},
		{"postgres dsn that does not parse", edit(goodYAML, "server:", "storage: {driver: postgres, dsn: 'host=db port=notaport password="+cfgPassword+"'}", "server:"),
			"storage.dsn", "cannot parse `host=db port=notaport password=xxxxx`: invalid port"},
		{"postgres URL that does not parse", edit(goodYAML, "server:", "storage: {driver: postgres, dsn: 'postgres://u:"+cfgPassword+"@db:x/wecombot'}", "server:"),
			"storage.dsn", "cannot parse `postgres://u:xxxxxx@db:x/wecombot`: failed to parse as URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yml), noEnv)
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Fatalf("want 1 problem, got %d:\n%s\nin:\n%s", len(ps), strings.Join(ps, "\n"), tt.yml)
			}
			if want := "config: " + tt.key + ": "; !strings.HasPrefix(ps[0], want) {
				t.Errorf("problem %q does not name the key (%q)", ps[0], want)
			}
			if !strings.Contains(ps[0], tt.say) {
				t.Errorf("problem %q does not say %q", ps[0], tt.say)
			}
		})
	}
}

// TestParseConfigDurations: a value that is not a duration is reported as
// the file is decoded, by its key and its line, however it is written, and
// its key keeps the default.
func TestParseConfigDurations(t *testing.T) {
	const examples = " is not a duration (examples: 90s, 5m, 24h)"
	tests := []struct {
		name string
		yml  string
		env  map[string]string
		want []string
	}{
		{"block", edit(goodYAML, "llm:", "llm:", "  timeout: abc"), nil,
			[]string{`config: llm.timeout: line 7: "abc"` + examples}},
		{"flow, two on a line", edit(goodYAML, "server:", "pipeline: {lease: soon, give_up_after: 1d}", "server:"), nil,
			[]string{`config: pipeline.lease: line 1: "soon"` + examples, `config: pipeline.give_up_after: line 1: "1d"` + examples}},
		{"from the environment", edit(goodYAML, "llm:", "llm:", "  timeout: ${LLM_TIMEOUT}"), map[string]string{"LLM_TIMEOUT": "1 minute"},
			[]string{`config: llm.timeout: line 7: "1 minute"` + examples}},
		{"a number without unit", edit(goodYAML, "server:", "storage:", "  retention: 30", "server:"), nil,
			[]string{`config: storage.retention: line 2: "30"` + examples}},
		{"a list", edit(goodYAML, "addr:", `addr: "127.0.0.1:0"`, "shutdown_timeout: [20s]"), nil,
			[]string{"config: server.shutdown_timeout: line 3:" + examples}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yml), envOf(tt.env))
			if ps := problems(t, err); !reflect.DeepEqual(ps, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s\nin:\n%s", strings.Join(ps, "\n"), strings.Join(tt.want, "\n"), tt.yml)
			}
			if d := defaults(); cfg.LLM.Timeout != d.LLM.Timeout || cfg.Pipeline.Lease != d.Pipeline.Lease ||
				cfg.Storage.Retention != d.Storage.Retention || cfg.Server.ShutdownTimeout != d.Server.ShutdownTimeout {
				t.Errorf("a bad duration did not keep the default: %+v", cfg)
			}
		})
	}
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	yml := `server:
  adress: ":80"
wecom:
  api_base: qyapi.weixin.qq.com
  token_refresh_before: 5x
llm:
  modle: gpt
  api_key: ${OPENAI_API_KEY}
admin:
  password: ""
bots:
  - name: helpdesk
    corp_id: ww
    agent_id: 0
    token: ` + cfgToken + `
    encoding_aes_key: ` + cfgAESKey[:42] + `
  - name: helpdesk
    corp_id: ww
    agent_id: 3
    secrte: ` + cfgSecret + `
    secret: ` + cfgSecret + `
    token: ` + cfgToken + `
    encoding_aes_key: abcdefghijklmnopqrstuvwxyz0123456789ABC*EFG
`
	_, err := ParseConfig([]byte(yml), noEnv)
	if err == nil {
		t.Fatal("no error")
	}
	ps := problems(t, err)
	want := []string{
		"unknown key: line 2: server.adress",
		"unknown key: line 7: llm.modle",
		"unknown key: line 20: bots[].secrte",
		"config: llm.api_key: line 8: ${OPENAI_API_KEY} is not set",
		`wecom.api_base: "qyapi.weixin.qq.com" is not an http(s) URL`,
		`wecom.token_refresh_before: line 5: "5x" is not a duration`,
		"admin.password: is empty",
		"bots[0] (helpdesk).agent_id:",
		"bots[0] (helpdesk).secret: is empty",
		"bots[0] (helpdesk).encoding_aes_key: must be 43 characters, got 42",
		"bots[1] (helpdesk).name: \"helpdesk\" is used by another bot",
		"bots[1] (helpdesk).encoding_aes_key: is not a valid EncodingAESKey",
	}
	if len(ps) != len(want) {
		t.Errorf("%d problems reported, want %d:\n%s", len(ps), len(want), strings.Join(ps, "\n"))
	}
	for _, w := range want {
		found := false
		for _, p := range ps {
			found = found || strings.Contains(p, w)
		}
		if !found {
			t.Errorf("problem %q not reported in:\n%s", w, strings.Join(ps, "\n"))
		}
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wecombot.yaml")
	if err := os.WriteFile(path, []byte(edit(goodYAML, "secret:", "secret: ${CFG_TEST_SECRET}")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CFG_TEST_SECRET", cfgSecret)
	cfg, err := LoadConfig(path)
	if err != nil || cfg.Bots[0].Secret != cfgSecret {
		t.Fatalf("LoadConfig = %+v, %v", cfg, err)
	}
	_, err = LoadConfig(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("LoadConfig(missing) = %v, want a not-exist error naming the file", err)
	}
	if err := os.WriteFile(path, []byte("server: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil {
		t.Error("LoadConfig(broken YAML) = nil error")
	}
}

func TestEnvDefaults(t *testing.T) {
	env := map[string]string{"SET": "from-env:6379", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	base := "admin: {password: pw}\nbots: [{name: a, corp_id: c, agent_id: 1, secret: s, token: t, encoding_aes_key: " +
		strings.Repeat("A", 43) + "}]\n"
	cases := []struct{ value, want string }{
		{`"${UNSET:-redis:6379}"`, "redis:6379"},
		{`"${UNSET:-}"`, ""},
		{`"${SET:-ignored}"`, "from-env:6379"},
		{`"${EMPTY:-ignored}"`, ""}, // set but empty is a value
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(base+"redis: {addr: "+c.value+"}\n"), lookup)
		if err != nil {
			t.Fatalf("%s: %v", c.value, err)
		}
		if cfg.Redis.Addr != c.want {
			t.Errorf("%s: got %q, want %q", c.value, cfg.Redis.Addr, c.want)
		}
	}
}

func TestStorageRetention(t *testing.T) {
	for _, tt := range []struct {
		yml  string
		want time.Duration
	}{
		{goodYAML, 720 * time.Hour},
		{edit(goodYAML, "server:", "storage:", "  retention: 0", "server:"), 0},
		{edit(goodYAML, "server:", "storage:", "  retention: 168h", "  dsn: x.db", "server:"), 168 * time.Hour},
	} {
		cfg, err := ParseConfig([]byte(tt.yml), noEnv)
		if err != nil {
			t.Fatalf("ParseConfig: %v\nin:\n%s", err, tt.yml)
		}
		if got := time.Duration(cfg.Storage.Retention); got != tt.want {
			t.Errorf("storage.retention = %s, want %s", got, tt.want)
		}
	}
	// The section keeps storage.Config's keys and reports its unknown ones.
	_, err := ParseConfig([]byte(edit(goodYAML, "server:", "storage:", "  retension: 1h", "server:")), noEnv)
	ps := problems(t, err)
	if len(ps) != 1 || !strings.Contains(ps[0], "unknown key: line 2: storage.retension") {
		t.Errorf("misspelt key: got %q", ps)
	}
}

// prunerFunc is a fake storage for the janitor.
type prunerFunc func(ctx context.Context, before time.Time) (storage.PruneResult, error)

func (f prunerFunc) Prune(ctx context.Context, before time.Time) (storage.PruneResult, error) {
	return f(ctx, before)
}

// TestJanitor: storage.retention is applied at start and then every hour of
// the service's clock, until the context ends; 0 never prunes.
func TestJanitor(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC))
	calls := make(chan time.Time, 10)
	db := prunerFunc(func(_ context.Context, before time.Time) (storage.PruneResult, error) {
		calls <- before
		return storage.PruneResult{Messages: 1}, nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		janitor(ctx, db, 720*time.Hour, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	next := func() time.Time {
		t.Helper()
		select {
		case b := <-calls:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("the janitor did not prune")
			return time.Time{}
		}
	}
	if got, want := next(), clock.Now().Add(-720*time.Hour); !got.Equal(want) {
		t.Errorf("first prune before %v, want %v", got, want)
	}
	if err := clock.BlockUntilContext(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if got, want := next(), clock.Now().Add(-720*time.Hour); !got.Equal(want) {
		t.Errorf("hourly prune before %v, want %v", got, want)
	}
	cancel()
	<-done

	janitor(t.Context(), prunerFunc(func(context.Context, time.Time) (storage.PruneResult, error) {
		t.Error("retention 0 pruned")
		return storage.PruneResult{}, nil
	}), 0, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// TestParseConfigStorageDSN: a SQLite file that cannot be created is
// refused before anything is opened, and nothing is created by the check.
func TestParseConfigStorageDSN(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dsn, want string }{
		{filepath.Join(file, "db", "wecombot.db"), "config: storage.dsn: " + file + " is a file, so the folder for " + filepath.Join(file, "db", "wecombot.db") + " cannot be created"},
		{dir, "config: storage.dsn: " + dir + " is a folder, not a database file"},
		{"file:" + dir + "?mode=rwc", "config: storage.dsn: " + dir + " is a folder, not a database file"},
		{filepath.Join(dir, "new", "folder", "wecombot.db"), ""},
		{":memory:", ""},
	}
	for _, tt := range tests {
		_, err := ParseConfig([]byte(edit(goodYAML, "server:", "storage: {dsn: '"+tt.dsn+"'}", "server:")), noEnv)
		var want []string
		if tt.want != "" {
			want = []string{tt.want}
		}
		if ps := problems(t, err); !reflect.DeepEqual(ps, want) {
			t.Errorf("dsn %s: problems %q, want %q", tt.dsn, ps, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the check created a folder: %v", err)
	}
}

func TestConfigWarnings(t *testing.T) {
	tests := []struct {
		baseURL string
		want    []string
	}{
		{"https://api.openai.com/v1", nil},
		{"https://api.openai.com/v1/", nil},
		{"http://127.0.0.1:11434/v1", nil},
		{"https://api.openai.com", []string{"llm.base_url: the path does not end in /v1; OpenAI-compatible APIs usually need it (https://api.openai.com/v1)"}},
		{"https://example.com/openai/", []string{"llm.base_url: the path does not end in /v1; OpenAI-compatible APIs usually need it (https://example.com/openai/v1)"}},
		// Refused as a problem; no warning besides.
		{"api.openai.com", nil},
	}
	for _, tt := range tests {
		cfg, _ := ParseConfig([]byte(edit(goodYAML, "api_key:", "api_key: sk", "base_url: "+tt.baseURL)), noEnv)
		if got := cfg.warnings(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("base_url %s: warnings %q, want %q", tt.baseURL, got, tt.want)
		}
	}
}

// Keys of the AI bots of the kind tests; none may be echoed either.
const (
	cfgBotID    = "aibcfgbotid"
	cfgWSSecret = "cfg-ws-secret-never-echoed"
)

// withBot is goodYAML with a bot appended as bots[1]: its name, then its
// keys, one "key: value" a line.
func withBot(name string, keys ...string) string {
	yml := goodYAML + "  - name: " + name + "\n"
	for _, k := range keys {
		yml += "    " + k + "\n"
	}
	return yml
}

var (
	aibotCallback = []string{"kind: aibot", `token: "` + cfgToken + `"`, `encoding_aes_key: "` + cfgAESKey + `"`}
	aibotWS       = []string{"kind: aibot", "mode: websocket", "bot_id: " + cfgBotID, `secret: "` + cfgWSSecret + `"`}
)

// TestParseConfigBotKinds: each kind and mode takes its own keys; what it
// lacks and what belongs to another is named with the bot.
func TestParseConfigBotKinds(t *testing.T) {
	type problem struct{ key, say string }
	const assistant = "bots[1] (assistant)."
	tests := []struct {
		name string
		yml  string
		want []problem // none: valid
	}{
		{"aibot callback", withBot("assistant", aibotCallback...), nil},
		{"aibot callback with bot_id", withBot("assistant", append(aibotCallback, "bot_id: "+cfgBotID)...), nil},
		{"aibot callback, mode spelled out", withBot("assistant", append(aibotCallback, "mode: callback")...), nil},
		{"aibot websocket", withBot("assistant", aibotWS...), nil},
		{"app, kind spelled out", edit(goodYAML, "- name:", "- name: helpdesk", "  kind: app"), nil},
		{"aibot callback with agent_id and corp_id", withBot("assistant", append(aibotCallback, "agent_id: 1000003", "corp_id: wwx")...),
			[]problem{
				{assistant + "corp_id", "is not a key of an AI bot (kind: aibot)"},
				{assistant + "agent_id", "is not a key of an AI bot (kind: aibot)"},
			}},
		{"aibot callback with a secret", withBot("assistant", append(aibotCallback, `secret: "`+cfgWSSecret+`"`)...),
			[]problem{{assistant + "secret", "is not a key of an AI bot in callback mode (the long-connection secret is for mode: websocket)"}}},
		{"aibot callback without token and key", withBot("assistant", "kind: aibot"),
			[]problem{{assistant + "token", "is empty"}, {assistant + "encoding_aes_key", "must be 43 characters, got 0"}}},
		{"aibot callback with a short key", withBot("assistant", "kind: aibot", "token: t", `encoding_aes_key: "`+cfgAESKey[:42]+`"`),
			[]problem{{assistant + "encoding_aes_key", "must be 43 characters, got 42"}}},
		{"aibot websocket with callback and app keys", withBot("assistant", append(aibotWS,
			`token: "`+cfgToken+`"`, `encoding_aes_key: "`+cfgAESKey+`"`, "agent_id: 7", "corp_id: wwx")...),
			[]problem{
				{assistant + "corp_id", "is not a key of an AI bot (kind: aibot)"},
				{assistant + "agent_id", "is not a key of an AI bot (kind: aibot)"},
				{assistant + "token", "is not a key of an AI bot in websocket mode (it has no callback)"},
				{assistant + "encoding_aes_key", "is not a key of an AI bot in websocket mode (it has no callback)"},
			}},
		{"aibot websocket without bot_id and secret", withBot("assistant", "kind: aibot", "mode: websocket"),
			[]problem{
				{assistant + "bot_id", "is empty: the long connection subscribes with the BotID"},
				{assistant + "secret", "is empty: the long connection subscribes with the bot's Secret"},
			}},
		{"unknown kind", withBot("assistant", append([]string{"kind: robot"}, aibotCallback[1:]...)...),
			[]problem{{assistant + "kind", `"robot" is not one of app, aibot`}}},
		{"unknown mode", withBot("assistant", append(aibotCallback, "mode: poll")...),
			[]problem{{assistant + "mode", `"poll" is not one of callback, websocket`}}},
		{"app with mode and bot_id", edit(goodYAML, "- name:", "- name: helpdesk", "  mode: websocket", "  bot_id: "+cfgBotID),
			[]problem{
				{"bots[0] (helpdesk).mode", "is not a key of a self-built app (kind: app)"},
				{"bots[0] (helpdesk).bot_id", "is not a key of a self-built app (kind: app)"},
			}},
		{"app answering kf", edit(goodYAML, "agent_id:", "agent_id: 1000002", "kf: {enabled: true, accounts: [wkA, wkB], welcome: 您好}"), nil},
		{"app with kf, every account", edit(goodYAML, "agent_id:", "agent_id: 1000002", "kf: {enabled: true}"), nil},
		{"aibot with kf", withBot("assistant", append(aibotCallback, "kf: {enabled: true}")...),
			[]problem{{assistant + "kf", "is not a key of an AI bot (kind: aibot); 微信客服 is answered by a self-built app"}}},
		{"app with bad kf", edit(goodYAML, "agent_id:", "agent_id: 1000002",
			`kf: {accounts: [wkA, "", wkA, "wk A"], welcome: "`+strings.Repeat("好", 700)+`"}`),
			[]problem{
				{"bots[0] (helpdesk).kf.enabled", "is false while kf.accounts or kf.welcome is set"},
				{"bots[0] (helpdesk).kf.accounts[1]", "is empty"},
				{"bots[0] (helpdesk).kf.accounts[2]", `"wkA" is listed twice`},
				{"bots[0] (helpdesk).kf.accounts[3]", `"wk A" is not an open_kfid (wk…)`},
				{"bots[0] (helpdesk).kf.welcome", "is 2100 bytes; WeCom cuts a text at 2048"},
			}},
		{"aibot_ws_url over http", edit(goodYAML, "token_refresh_before:", "token_refresh_before: 5m", "aibot_ws_url: https://openws.work.weixin.qq.com"),
			[]problem{{"wecom.aibot_ws_url", `"https://openws.work.weixin.qq.com" is not a ws:// or wss:// URL`}}},
		{"aibot_ws_url without host", edit(goodYAML, "token_refresh_before:", "token_refresh_before: 5m", "aibot_ws_url: 'ws://'"),
			[]problem{{"wecom.aibot_ws_url", `"ws://" is not a ws:// or wss:// URL`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yml), noEnv)
			ps := problems(t, err)
			if len(ps) != len(tt.want) {
				t.Fatalf("want %d problem(s), got %d:\n%s\nin:\n%s", len(tt.want), len(ps), strings.Join(ps, "\n"), tt.yml)
			}
			for i, w := range tt.want {
				if want := "config: " + w.key + ": " + w.say; ps[i] != want {
					t.Errorf("problem %d = %q\nwant        %q", i, ps[i], want)
				}
			}
			for _, p := range ps {
				for _, s := range append(cfgSecrets, cfgWSSecret) {
					if strings.Contains(p, s) {
						t.Errorf("problem %q echoes a secret", p)
					}
				}
			}
		})
	}
}

// TestParseConfigBotKindDefaults: a bot without kind is an app, as every
// file written before AI bots means; an AI bot without mode is a callback
// one; the long connection dials WeCom unless told otherwise.
func TestParseConfigBotKindDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(withBot("assistant", aibotCallback...)), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	app, ai := cfg.Bots[0], cfg.Bots[1]
	if app.Kind != adapter.KindApp || app.Mode != "" {
		t.Errorf("bots[0]: kind %q mode %q, want app and no mode", app.Kind, app.Mode)
	}
	if ai.Kind != adapter.KindAIBot || ai.Mode != adapter.ModeCallback {
		t.Errorf("bots[1]: kind %q mode %q, want aibot callback", ai.Kind, ai.Mode)
	}
	if got := cfg.WeCom.AIBotWSURL; got != "wss://openws.work.weixin.qq.com" {
		t.Errorf("wecom.aibot_ws_url = %q", got)
	}
	// Bots built in code (demo) are validated without those defaults.
	cfg.Bots[0].Kind, cfg.Bots[1].Mode = "", ""
	if ps := cfg.validate(); len(ps) > 0 {
		t.Errorf("empty kind and mode refused: %v", ps)
	}
	cfg, err = ParseConfig([]byte(edit(goodYAML, "token_refresh_before:", "token_refresh_before: 5m", "aibot_ws_url: ws://127.0.0.1:9000/ws")), noEnv)
	if err != nil || cfg.WeCom.AIBotWSURL != "ws://127.0.0.1:9000/ws" {
		t.Errorf("aibot_ws_url override: %q, %v", cfg.WeCom.AIBotWSURL, err)
	}
}

// TestServeAIBots: check accepts an app and AI bots in both modes, and
// the service runs them: the long connection dials wecom.aibot_ws_url,
// subscribes, and answers a message on its stream.
func TestServeAIBots(t *testing.T) {
	yml := withBot("assistant", aibotCallback...) + "  - name: ws\n    " + strings.Join(aibotWS, "\n    ") + "\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCmd(t, "check", "-config", path); code != 0 || !strings.Contains(stdout, "configuration OK (3 bot(s))") {
		t.Fatalf("check = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	sim := wecomsim.New(wecomsim.Options{
		Apps:   []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}},
		AIBots: []wecomsim.AIBot{{BotID: cfgBotID, Secret: cfgWSSecret}},
	})
	e := prepareEnv(t, sim.Handler(), respond)
	cfg := e.config()
	cfg.WeCom.AIBotWSURL = "ws" + strings.TrimPrefix(e.simSrv.URL, "http") + wecomsim.AIBotWSPath
	cfg.Bots = append(cfg.Bots, adapter.BotConfig{Name: "ws", Kind: adapter.KindAIBot, Mode: adapter.ModeWebSocket, BotID: cfgBotID, Secret: cfgWSSecret})
	m := NewMain(cfg, io.Discard)
	if err := m.Open(t.Context()); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	eventually.True(t, func() bool { _, ok := sim.AIBotConnection(cfgBotID); return ok }, "the long connection did not subscribe")
	var req string
	eventually.True(t, func() bool {
		var err error
		req, err = sim.DeliverMessage(t.Context(), cfgBotID, wecomsim.AIBotText(cfgBotID, "zhangsan", "hello"))
		return err == nil
	}, "cannot deliver")
	eventually.True(t, func() bool {
		s, _ := sim.AIBotStreamOf(req)
		return s.FinishFrames == 1 && strings.Contains(s.Content, "answer to")
	}, "the message was not answered on its stream")
	if v := sim.AIBotViolations(); len(v) > 0 {
		t.Errorf("violations: %v", v)
	}
}
