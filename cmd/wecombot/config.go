package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// Config is the configuration file, key for key. Durations are strings
// ("5m", "60s") parsed by validate, so that a bad one is reported with its key.
type Config struct {
	Server   ServerConfig   `yaml:"server"`
	Storage  StorageConfig  `yaml:"storage"`
	WeCom    WeComConfig    `yaml:"wecom"`
	LLM      LLMConfig      `yaml:"llm"`
	Redis    RedisConfig    `yaml:"redis"`
	Admin    AdminConfig    `yaml:"admin"`
	Pipeline PipelineConfig `yaml:"pipeline"`
	Replies  RepliesConfig  `yaml:"replies"`
	Log      LogConfig      `yaml:"log"`
	Bots     []BotConfig    `yaml:"bots"`
}

type ServerConfig struct {
	Addr            string `yaml:"addr"`
	ShutdownTimeout string `yaml:"shutdown_timeout"`
}

// StorageConfig is the storage: section: the database, and how long
// finished messages and conversation turns are kept.
type StorageConfig struct {
	storage.Config `yaml:",inline"`
	// Retention is the age past which the janitor prunes answered, failed
	// and ignored messages (with their dedupe keys and sent parts) and
	// conversation turns; "0" keeps everything.
	Retention string `yaml:"retention"`
}

type WeComConfig struct {
	APIBase            string `yaml:"api_base"`
	TokenRefreshBefore string `yaml:"token_refresh_before"`
	RequestTimeout     string `yaml:"request_timeout"`
	// Simulator says that APIBase is wecombot's WeCom simulator (`wecombot
	// simulate`): the panel then gets a "chat as a WeCom user" page that
	// reads the answers there. The service never asks api_base what it is,
	// so that its start makes no request production does not need.
	Simulator bool `yaml:"simulator"`
}

type LLMConfig struct {
	BaseURL      string `yaml:"base_url"`
	APIKey       string `yaml:"api_key"`
	Model        string `yaml:"model"`
	SystemPrompt string `yaml:"system_prompt"`
	Timeout      string `yaml:"timeout"`
	HistoryTurns int    `yaml:"history_turns"`
	Retries      int    `yaml:"retries"`
	// Stream asks for streamed answers and sends each paragraph as soon as
	// it is written; off for a server that cannot stream.
	Stream bool `yaml:"stream"`
	// MaxConcurrency caps the calls to the model in flight; the provider's
	// rate limits (429, 503) lower the number below it for a while.
	MaxConcurrency int `yaml:"max_concurrency"`
}

type RedisConfig struct {
	Addr string `yaml:"addr"`
}

type AdminConfig struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

type PipelineConfig struct {
	// Workers is no longer a setting (llm.max_concurrency replaced it); it
	// is still read so that a file carrying it gets a clear error rather
	// than "unknown key".
	Workers     *int   `yaml:"workers"`
	GiveUpAfter string `yaml:"give_up_after"`
	// Lease is how long an instance's claim on a user's pending messages
	// lasts unrenewed: after a crash, how soon others take them over.
	Lease string `yaml:"lease"`
}

type RepliesConfig struct {
	Unavailable string `yaml:"unavailable"`
	Help        string `yaml:"help"`
	TextOnly    string `yaml:"text_only"`
	Welcome     string `yaml:"welcome"`
	Reset       string `yaml:"reset"`
	Empty       string `yaml:"empty"`
	Interrupted string `yaml:"interrupted"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type BotConfig struct {
	Name           string `yaml:"name"`
	CorpID         string `yaml:"corp_id"`
	AgentID        int64  `yaml:"agent_id"`
	Secret         string `yaml:"secret"`
	Token          string `yaml:"token"`
	EncodingAESKey string `yaml:"encoding_aes_key"`
}

// defaults are the values of every key the file leaves out.
func defaults() Config {
	return Config{
		Server:  ServerConfig{Addr: ":8080", ShutdownTimeout: "20s"},
		Storage: StorageConfig{Config: storage.Config{Driver: "sqlite", DSN: "data/wecombot.db"}, Retention: "720h"},
		WeCom:   WeComConfig{APIBase: "https://qyapi.weixin.qq.com", TokenRefreshBefore: "5m", RequestTimeout: "10s"},
		LLM: LLMConfig{
			BaseURL: "https://api.openai.com/v1", Model: "gpt-4o-mini",
			SystemPrompt: "You are a helpful assistant.", Timeout: "60s", HistoryTurns: 10, Retries: 2,
			Stream: true, MaxConcurrency: adapter.DefaultMaxConcurrency,
		},
		Admin:    AdminConfig{Username: "admin"},
		Pipeline: PipelineConfig{GiveUpAfter: "24h", Lease: "15s"},
		Replies: RepliesConfig{
			Unavailable: "抱歉，助手暂时无法回答，请稍后再试。",
			Help:        "直接发送文字即可与助手对话。\n命令：\n/reset 或 /new 开始新的对话\n/help 查看帮助",
			TextOnly:    "目前只能理解文字消息，请用文字描述您的问题。",
			Reset:       "好的，已开始新的对话。",
			Empty:       "请输入文字内容。",
			Interrupted: "（回答被中断了，请重新提问。）",
		},
		Log: LogConfig{Level: "info", Format: "text"},
	}
}

// envRef is the ${VAR} or ${VAR:-default} form; a bare $ is left alone
// (passwords contain it).
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// LoadConfig reads path, expands ${VAR} from the environment in every value,
// and validates the result. All problems are reported together.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(data, os.LookupEnv)
}

// ParseConfig is LoadConfig on bytes, with the environment as a function.
func ParseConfig(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var problems []error
	// Unknown keys are caught on the document as written, so that their
	// line numbers are right; values are typed after expansion below.
	var probe Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&probe); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("config: %w", err)
		}
		for _, e := range te.Errors {
			if strings.Contains(e, "not found in type") {
				problems = append(problems, fmt.Errorf("config: unknown key: %s", unknownKey(e)))
			}
		}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	expand(&root, lookup, &problems)
	cfg := defaults()
	if len(root.Content) > 0 {
		if err := root.Decode(&cfg); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("config: %w", err)
			}
			for _, e := range te.Errors {
				if !strings.Contains(e, "not found in type") {
					problems = append(problems, fmt.Errorf("config: %s", e))
				}
			}
		}
	}
	problems = append(problems, cfg.validate()...)
	if len(problems) > 0 {
		return &cfg, errors.Join(problems...)
	}
	return &cfg, nil
}

// sections names the YAML section of each configuration struct, so that an
// unknown key is reported as "llm.modle" rather than by Go type.
var sections = map[string]string{
	"Config": "", "ServerConfig": "server.", "WeComConfig": "wecom.", "LLMConfig": "llm.",
	"RedisConfig": "redis.", "AdminConfig": "admin.", "PipelineConfig": "pipeline.", "RepliesConfig": "replies.",
	"LogConfig": "log.", "BotConfig": "bots[].", "storage.Config": "storage.", "StorageConfig": "storage.",
}

// unknownKey rewrites yaml's "line 8: field modle not found in type
// main.LLMConfig" as "line 8: llm.modle".
func unknownKey(e string) string {
	i := strings.Index(e, "field ")
	j := strings.Index(e, " not found in type ")
	if i < 0 || j < i {
		return e
	}
	field := e[i+len("field ") : j]
	typ := strings.TrimPrefix(e[j+len(" not found in type "):], "main.")
	prefix, ok := sections[typ]
	if !ok {
		return e
	}
	return e[:i] + prefix + field
}

func expand(n *yaml.Node, lookup func(string) (string, bool), problems *[]error) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name, def, hasDefault := strings.Cut(ref[2:len(ref)-1], ":-")
			v, ok := lookup(name)
			if !ok && hasDefault {
				return def
			}
			if !ok {
				*problems = append(*problems, fmt.Errorf("config: line %d: environment variable %s is not set", n.Line, name))
			}
			return v
		})
		// A plain ${VAR} is typed as if its value were written in its place,
		// so that agent_id: ${WECOM_AGENT_ID} is a number; string keys keep
		// the text exactly anyway (yaml.v3 copies it), except a value yaml
		// reads as null, which is pinned to a string like a quoted one.
		if n.Tag == "" || n.Tag == "!!str" {
			quoted := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0
			switch n.Value {
			case "", "~", "null", "Null", "NULL":
				quoted = true
			}
			if quoted {
				n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
			} else {
				n.Tag = "" // resolved again by Decode
			}
		}
	}
	for _, c := range n.Content {
		expand(c, lookup, problems)
	}
}

var botName = regexp.MustCompile(`^[a-z0-9_-]+$`)

func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	duration := func(key, v string) {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			bad(key, "%q is not a duration (examples: 90s, 5m, 24h)", v)
		case d <= 0:
			bad(key, "must be positive, got %s", v)
		}
	}
	urlKey := func(key, v string) {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key, "%q is not an http(s) URL", v)
		}
	}
	if c.Server.Addr == "" {
		bad("server.addr", "is empty")
	}
	duration("server.shutdown_timeout", c.Server.ShutdownTimeout)
	switch c.Storage.Driver {
	case "sqlite", "postgres":
	default:
		bad("storage.driver", "%q is not supported (supported: sqlite, postgres)", c.Storage.Driver)
	}
	if c.Storage.DSN == "" {
		bad("storage.dsn", "is empty")
	}
	if d, err := time.ParseDuration(c.Storage.Retention); err != nil {
		bad("storage.retention", "%q is not a duration (examples: 720h, 168h; 0 keeps everything)", c.Storage.Retention)
	} else if d < 0 {
		bad("storage.retention", "must be 0 (keep everything) or positive, got %s", c.Storage.Retention)
	} else if d > 0 && d < time.Hour {
		bad("storage.retention", "must be 0 or at least 1h (WeCom retries callbacks; a dedupe key must outlive them), got %s", c.Storage.Retention)
	}
	urlKey("wecom.api_base", c.WeCom.APIBase)
	if u, err := url.Parse(c.WeCom.APIBase); c.WeCom.Simulator && err == nil && isWeCom(u.Hostname()) {
		bad("wecom.simulator", "is true, but wecom.api_base %q is WeCom itself: point api_base at `wecombot simulate` (it prints its address), or set simulator to false", c.WeCom.APIBase)
	}
	duration("wecom.token_refresh_before", c.WeCom.TokenRefreshBefore)
	duration("wecom.request_timeout", c.WeCom.RequestTimeout)
	urlKey("llm.base_url", c.LLM.BaseURL)
	if c.LLM.Model == "" {
		bad("llm.model", "is empty")
	}
	duration("llm.timeout", c.LLM.Timeout)
	if c.LLM.HistoryTurns < 0 {
		bad("llm.history_turns", "must be 0 or more, got %d", c.LLM.HistoryTurns)
	}
	if c.LLM.Retries < 0 || c.LLM.Retries > 5 {
		bad("llm.retries", "must be between 0 and 5, got %d", c.LLM.Retries)
	}
	if c.Admin.Username == "" {
		bad("admin.username", "is empty")
	}
	if c.Admin.Password == "" {
		bad("admin.password", "is empty: the admin API and panel need one (set WECOMBOT_ADMIN_PASSWORD)")
	}
	if c.LLM.MaxConcurrency < 1 {
		bad("llm.max_concurrency", "must be at least 1, got %d", c.LLM.MaxConcurrency)
	}
	if c.Pipeline.Workers != nil {
		bad("pipeline.workers", "is no longer a setting: every user with a message waits on the model at once, up to llm.max_concurrency calls in flight (default %d); remove the key, or set llm.max_concurrency for a provider with a concurrency limit", adapter.DefaultMaxConcurrency)
	}
	duration("pipeline.give_up_after", c.Pipeline.GiveUpAfter)
	if d, err := time.ParseDuration(c.Pipeline.Lease); err != nil || d < time.Second || d > 10*time.Minute {
		bad("pipeline.lease", "must be a duration from 1s to 10m, got %q", c.Pipeline.Lease)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if len(c.Bots) == 0 {
		bad("bots", "no bot is configured")
	}
	seen := map[string]bool{}
	for i, b := range c.Bots {
		key := fmt.Sprintf("bots[%d]", i)
		if b.Name != "" {
			key = fmt.Sprintf("bots[%d] (%s)", i, b.Name)
		}
		switch {
		case b.Name == "":
			bad(key+".name", "is empty")
		case !botName.MatchString(b.Name):
			bad(key+".name", "%q may only contain a-z, 0-9, _ and -", b.Name)
		case seen[b.Name]:
			bad(key+".name", "%q is used by another bot", b.Name)
		}
		seen[b.Name] = true
		if b.CorpID == "" {
			bad(key+".corp_id", "is empty")
		}
		if b.AgentID <= 0 {
			bad(key+".agent_id", "must be the app's AgentId (a positive number)")
		}
		if b.Secret == "" {
			bad(key+".secret", "is empty")
		}
		if b.Token == "" {
			bad(key+".token", "is empty")
		}
		switch {
		case len(b.EncodingAESKey) != 43:
			bad(key+".encoding_aes_key", "must be 43 characters, got %d", len(b.EncodingAESKey))
		default:
			if _, err := wxcrypto.New("t", b.EncodingAESKey, ""); err != nil {
				bad(key+".encoding_aes_key", "is not a valid EncodingAESKey (43 base64 characters)")
			}
		}
	}
	return errs
}

// isWeCom says whether host is WeCom's own API (qyapi.weixin.qq.com).
func isWeCom(host string) bool {
	host = strings.ToLower(host)
	return host == "weixin.qq.com" || strings.HasSuffix(host, ".weixin.qq.com")
}

// mustDuration parses a validated duration.
func mustDuration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func (c *Config) botConfigs() []adapter.BotConfig {
	out := make([]adapter.BotConfig, len(c.Bots))
	for i, b := range c.Bots {
		out[i] = adapter.BotConfig{Name: b.Name, CorpID: b.CorpID, AgentID: b.AgentID,
			Secret: b.Secret, Token: b.Token, EncodingAESKey: b.EncodingAESKey}
	}
	return out
}

func (c *Config) llmConfig() llm.Config {
	return llm.Config{BaseURL: c.LLM.BaseURL, APIKey: c.LLM.APIKey, Model: c.LLM.Model,
		SystemPrompt: c.LLM.SystemPrompt, Timeout: mustDuration(c.LLM.Timeout), HistoryTurns: c.LLM.HistoryTurns}
}
