package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/web"
)

// Config is the configuration file, key for key. A section that one
// component reads is decoded straight into that component's struct (admin:
// web.AdminConfig, replies: adapter.Replies, bots: adapter.BotConfig); a
// section holding the keys of several components, or of cmd too, inlines
// their structs. Durations are config.Duration, decoded from the file, so
// that a bad one is reported with its key and line.
type Config struct {
	Server   ServerConfig        `yaml:"server"`
	Storage  StorageConfig       `yaml:"storage"`
	WeCom    WeComConfig         `yaml:"wecom"`
	LLM      LLMConfig           `yaml:"llm"`
	Redis    RedisConfig         `yaml:"redis"`
	Admin    web.AdminConfig     `yaml:"admin"`
	Pipeline PipelineConfig      `yaml:"pipeline"`
	Replies  adapter.Replies     `yaml:"replies"`
	Log      LogConfig           `yaml:"log"`
	Bots     []adapter.BotConfig `yaml:"bots"`
}

type ServerConfig struct {
	Addr            string          `yaml:"addr"`
	ShutdownTimeout config.Duration `yaml:"shutdown_timeout"`
	// PprofAddr, when set, serves Go's profiler (net/http/pprof) on its
	// own listener, apart from the panel and the callbacks: for measuring
	// the service under load. Empty: no profiler.
	PprofAddr string `yaml:"pprof_addr"`
}

// StorageConfig is the storage: section: the database, and how long
// finished messages and conversation turns are kept.
type StorageConfig struct {
	storage.Config `yaml:",inline"`
	// Retention is the age past which the janitor prunes answered, failed
	// and ignored messages (with their dedupe keys and sent parts) and
	// conversation turns; 0 keeps everything.
	Retention config.Duration `yaml:"retention"`
}

// WeComConfig is the wecom: section: WeCom's API (the adapter's keys), and
// whether it is the simulator.
type WeComConfig struct {
	adapter.WeComConfig `yaml:",inline"`
	// Simulator says that APIBase is wecombot's WeCom simulator (`wecombot
	// simulate`): the panel then gets a "chat as a WeCom user" page that
	// reads the answers there. The service never asks api_base what it is,
	// so that its start makes no request production does not need.
	Simulator bool `yaml:"simulator"`
}

// LLMConfig is the llm: section: the client's keys (where the model is,
// how long a call may take) and the pipeline's (what it sends, how it
// retries and how many calls it makes at once).
type LLMConfig struct {
	llm.Config        `yaml:",inline"`
	adapter.LLMConfig `yaml:",inline"`
}

type RedisConfig struct {
	Addr string `yaml:"addr"`
}

// PipelineConfig is the pipeline: section. Its keys feed two components
// (lease the pipeline, give_up_after the outbox), which receive the values.
type PipelineConfig struct {
	// Workers is no longer a setting (llm.max_concurrency replaced it); it
	// is still read so that a file carrying it gets a clear error rather
	// than "unknown key".
	Workers *int `yaml:"workers"`
	// GiveUpAfter is how long a reply part is retried before its message
	// is marked failed.
	GiveUpAfter config.Duration `yaml:"give_up_after"`
	// Lease is how long an instance's claim on a user's pending messages
	// lasts unrenewed: after a crash, how soon others take them over.
	Lease config.Duration `yaml:"lease"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// defaults are the values of every key the file leaves out.
func defaults() Config {
	return Config{
		Server: ServerConfig{Addr: ":8080", ShutdownTimeout: config.Duration(20 * time.Second)},
		Storage: StorageConfig{
			Config:    storage.Config{Driver: "sqlite", DSN: "data/wecombot.db"},
			Retention: config.Duration(720 * time.Hour),
		},
		WeCom: WeComConfig{WeComConfig: adapter.WeComConfig{
			APIBase:            "https://qyapi.weixin.qq.com",
			TokenRefreshBefore: config.Duration(5 * time.Minute),
			RequestTimeout:     config.Duration(10 * time.Second),
			AIBotWSURL:         "wss://openws.work.weixin.qq.com",
		}},
		LLM: LLMConfig{
			Config: llm.Config{
				BaseURL: "https://api.openai.com/v1", Model: "gpt-4o-mini", Timeout: config.Duration(60 * time.Second),
			},
			LLMConfig: adapter.LLMConfig{
				SystemPrompt: "You are a helpful assistant.", HistoryTurns: 10, Retries: 2,
				Stream: true, MaxConcurrency: adapter.DefaultMaxConcurrency,
			},
		},
		Admin:    web.AdminConfig{Username: "admin"},
		Pipeline: PipelineConfig{GiveUpAfter: config.Duration(24 * time.Hour), Lease: config.Duration(15 * time.Second)},
		Replies: adapter.Replies{
			Unavailable: "抱歉，助手暂时无法回答，请稍后再试。",
			Help:        "直接发送文字即可与助手对话。\n命令：\n/reset 或 /new 开始新的对话\n/help 查看帮助",
			TextOnly:    "目前只能理解文字消息，请用文字描述您的问题。",
			ImagePrompt: "请描述这张图片。",
			ImageFailed: "抱歉，这张图片无法处理。请发送 10 MB 以内的 JPG、PNG、GIF 或 WebP 图片。",
			Reset:       "好的，已开始新的对话。",
			Empty:       "请输入文字内容。",
			Interrupted: "（回答被中断了，请重新提问。）",
			Continued:   "（回答较长，完整内容稍后发送。）",
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
// Each cause is reported once: a key whose value names an unset variable,
// or has the wrong type, gets no further problem from validation (an unset
// secret is not also "empty").
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
	problems = append(problems, unknownBotLLMKeys(&root)...)
	var unset []unsetVar
	expand(&root, "", lookup, &unset)
	var typed []*keyError // values of the wrong type
	cfg := defaults()
	if len(root.Content) > 0 {
		typeCheck(root.Content[0], reflect.TypeOf(cfg), "", &typed)
		if err := root.Decode(&cfg); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("config: %w", err)
			}
			// typeCheck took out every value yaml.v3 could refuse; what is
			// left (values reached through a merge key) keeps yaml.v3's
			// words and line.
			for _, e := range te.Errors {
				if !strings.Contains(e, "not found in type") {
					problems = append(problems, fmt.Errorf("config: %s", e))
				}
			}
		}
	}
	cfg.defaultBotKinds()
	// A cause found while reading would show again after it: an unset
	// variable leaves an empty value, a value of the wrong type the default.
	var done []string
	for _, u := range unset {
		problems = append(problems, u.problem(&cfg))
		for _, use := range u.uses {
			done = append(done, use.key)
		}
	}
	for _, e := range typed {
		if !alreadyReported(e.key, done) {
			e.name = cfg.keyName(e.key)
			problems = append(problems, e)
			done = append(done, e.key)
		}
	}
	for _, e := range cfg.validate() {
		var ke *keyError
		if errors.As(e, &ke) && alreadyReported(ke.key, done) {
			continue
		}
		problems = append(problems, e)
	}
	if len(problems) > 0 {
		return &cfg, errors.Join(problems...)
	}
	return &cfg, nil
}

// defaultBotKinds fills in the kind of each bot that leaves it out (app:
// files written before AI bots keep their meaning) and the mode of each AI
// bot that does (callback). An app keeps an empty mode: mode is no key of
// an app, and validate refuses one that is set.
func (c *Config) defaultBotKinds() {
	for i := range c.Bots {
		b := &c.Bots[i]
		if b.Kind == "" {
			b.Kind = adapter.KindApp
		}
		if b.Kind == adapter.KindAIBot && b.Mode == "" {
			b.Mode = adapter.ModeCallback
		}
	}
}

// keyError is a problem of one key's value. Its key is the key's path
// ("bots[0].secret"), by which problems of one cause are told apart; its
// name is the key as people read it ("bots[0] (helpdesk).secret").
type keyError struct {
	key, name string
	line      int // 0: not known
	msg       string
}

func (e *keyError) Error() string {
	name := e.name
	if name == "" {
		name = e.key
	}
	switch {
	case name == "" && e.line > 0:
		return fmt.Sprintf("config: line %d: %s", e.line, e.msg)
	case name == "":
		return "config: " + e.msg
	case e.line > 0:
		return fmt.Sprintf("config: %s: line %d: %s", name, e.line, e.msg)
	default:
		return fmt.Sprintf("config: %s: %s", name, e.msg)
	}
}

// alreadyReported says whether key, or a key it is under, is in done.
func alreadyReported(key string, done []string) bool {
	for _, d := range done {
		if d == "" {
			continue
		}
		if key == d || strings.HasPrefix(key, d+".") || strings.HasPrefix(key, d+"[") {
			return true
		}
	}
	return false
}

// keyName is the key at path as problems name it: a bot's keys carry the
// bot's name, "bots[0] (helpdesk).secret", as the file shows it.
func (c *Config) keyName(path string) string {
	rest, ok := strings.CutPrefix(path, "bots[")
	if !ok {
		return path
	}
	idx, rest, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i < 0 || i >= len(c.Bots) || c.Bots[i].Name == "" {
		return path
	}
	return fmt.Sprintf("bots[%d] (%s)%s", i, c.Bots[i].Name, rest)
}

// sections names the YAML section of each configuration struct, so that an
// unknown key is reported as "llm.modle" rather than by Go type. A struct
// inlined in another (llm.Config in LLMConfig) is reported as the outer one.
var sections = map[string]string{
	"Config": "", "ServerConfig": "server.", "StorageConfig": "storage.", "WeComConfig": "wecom.",
	"LLMConfig": "llm.", "RedisConfig": "redis.", "web.AdminConfig": "admin.", "PipelineConfig": "pipeline.",
	"adapter.Replies": "replies.", "LogConfig": "log.", "adapter.BotConfig": "bots[].",
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

var (
	unmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	nodeType    = reflect.TypeFor[yaml.Node]()
)

// typeCheck reports each value under n that the Go type t of its key
// cannot hold, in words for people ("want a number, got \"abc\""), with
// its key and line, and takes it out of the document: a key then keeps its
// default, and yaml.v3 reports nothing more of it. A type that decodes
// itself (config.Duration) says its own problem, with its position
// (config.ValueError). Unknown keys are skipped: the probe reports them.
func typeCheck(n *yaml.Node, t reflect.Type, key string, typed *[]*keyError) (ok bool) {
	v := n
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		return true // yaml.v3 makes it the zero value
	}
	bad := func(format string, args ...any) bool {
		*typed = append(*typed, &keyError{key: key, line: n.Line, msg: fmt.Sprintf(format, args...)})
		return false
	}
	if t == nodeType {
		// The only yaml.Node of Config is bots[].llm: keys of the llm
		// section, which it overlays (Config.BotLLM).
		t = reflect.TypeFor[LLMConfig]()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		var te *yaml.TypeError
		if err := v.Decode(reflect.New(t).Interface()); errors.As(err, &te) && len(te.Errors) > 0 {
			_, _, msg, _ := config.Position(te.Errors[0])
			return bad("%s", msg)
		}
		return true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if v.Kind != yaml.MappingNode {
			return bad("want keys with values (key: value), got %s", shown(v))
		}
		fields := yamlFields(t)
		kept := v.Content[:0:0]
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			ft, known := fields[k.Value]
			if !known || typeCheck(val, ft, join(key, k.Value), typed) {
				kept = append(kept, k, val)
			}
		}
		v.Content = kept
		return true
	case reflect.Slice:
		if v.Kind != yaml.SequenceNode {
			return bad("want a list, got %s", shown(v))
		}
		for i, e := range v.Content {
			if !typeCheck(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i), typed) {
				// Its index stays, so that later items keep theirs: yaml.v3
				// skips a null it cannot put in a struct, so a struct's
				// stand-in is an empty mapping.
				stand := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
				if t.Elem().Kind() == reflect.Struct {
					stand = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				}
				stand.Line, stand.Column = e.Line, e.Column
				v.Content[i] = stand
			}
		}
		return true
	}
	want := map[reflect.Kind]string{reflect.Bool: "true or false", reflect.String: "text"}[t.Kind()]
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		want = "a number"
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float" {
			want = "a whole number"
			// yaml.v3 would cut 1.5 to 1.
			if f, err := strconv.ParseFloat(v.Value, 64); err != nil || f != math.Trunc(f) {
				return bad("want %s, got %s", want, shown(v))
			}
		}
	case reflect.Float32, reflect.Float64:
		want = "a number"
	}
	if v.Kind != yaml.ScalarNode {
		return bad("want %s, got %s", want, shown(v))
	}
	if err := v.Decode(reflect.New(t).Interface()); err != nil {
		return bad("want %s, got %s", want, shown(v))
	}
	return true
}

// shown is n as a type problem shows it: a scalar quoted, else its kind.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "keys with values"
	}
	return strconv.Quote(n.Value)
}

// yamlFields are the YAML keys of struct t and their types, those of
// inlined structs included.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
		case opts == "inline":
			maps.Copy(fields, yamlFields(f.Type))
		case name == "":
			fields[strings.ToLower(f.Name)] = f.Type
		default:
			fields[name] = f.Type
		}
	}
	return fields
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// unsetVar is an environment variable that the file names and the
// environment lacks, with every key whose value names it.
type unsetVar struct {
	name string
	uses []varUse
}

type varUse struct {
	key  string
	line int
}

// problem is the variable's one problem, on the first key that names it;
// c names the keys.
func (u unsetVar) problem(c *Config) *keyError {
	first := u.uses[0]
	msg := fmt.Sprintf("${%s} is not set", u.name)
	if len(u.uses) > 1 {
		var also []string
		for _, use := range u.uses[1:] {
			k := c.keyName(use.key)
			if k == "" {
				k = "a value"
			}
			also = append(also, fmt.Sprintf("%s (line %d)", k, use.line))
		}
		msg += "; also used by " + strings.Join(also, ", ")
	}
	return &keyError{key: first.key, name: c.keyName(first.key), line: first.line, msg: msg}
}

// expand replaces each ${VAR} in the values under n, whose key is key,
// and records in unset the variables the environment lacks.
func expand(n *yaml.Node, key string, lookup func(string) (string, bool), unset *[]unsetVar) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name, def, hasDefault := strings.Cut(ref[2:len(ref)-1], ":-")
			v, ok := lookup(name)
			if !ok && hasDefault {
				return def
			}
			if !ok {
				use := varUse{key: key, line: n.Line}
				i := slices.IndexFunc(*unset, func(u unsetVar) bool { return u.name == name })
				if i < 0 {
					*unset = append(*unset, unsetVar{name: name})
					i = len(*unset) - 1
				}
				if !slices.Contains((*unset)[i].uses, use) {
					(*unset)[i].uses = append((*unset)[i].uses, use)
				}
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
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expand(n.Content[i], key, lookup, unset)
			expand(n.Content[i+1], join(key, n.Content[i].Value), lookup, unset)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expand(c, fmt.Sprintf("%s[%d]", key, i), lookup, unset)
		}
	default:
		for _, c := range n.Content {
			expand(c, key, lookup, unset)
		}
	}
}

var botName = regexp.MustCompile(`^[a-z0-9_-]+$`)

func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &keyError{key: key, name: c.keyName(key), msg: fmt.Sprintf(format, args...)})
	}
	// A value that is not a duration was reported as the file was read
	// (typeCheck, config.Duration); what is left to check is its range.
	positive := func(key string, d config.Duration) {
		if d <= 0 {
			bad(key, "must be positive, got %s", d)
		}
	}
	urlKey := func(key, v string) {
		if _, ok := httpURL(v); !ok {
			bad(key, "%q is not an http(s) URL", v)
		}
	}
	// net.Listen refuses these, but only once storage is open.
	if a := c.Server.Addr; a == "" {
		bad("server.addr", "is empty")
	} else if !isHostPort(a) {
		bad("server.addr", "%q is not host:port: write \":%s\" (every interface) or \"127.0.0.1:%[2]s\" (this machine only)", a, portOf(a))
	}
	if a := c.Server.PprofAddr; a != "" {
		if !isHostPort(a) {
			bad("server.pprof_addr", "%q is not host:port (e.g. 127.0.0.1:6060)", a)
		} else if a == c.Server.Addr {
			bad("server.pprof_addr", "is server.addr; the profiler needs a listener of its own")
		}
	}
	positive("server.shutdown_timeout", c.Server.ShutdownTimeout)
	switch c.Storage.Driver {
	case "sqlite", "postgres":
	default:
		bad("storage.driver", "%q is not supported (supported: sqlite, postgres)", c.Storage.Driver)
	}
	if c.Storage.DSN == "" {
		bad("storage.dsn", "is empty")
	} else if err := c.Storage.CheckDSN(); err != nil {
		bad("storage.dsn", "%v", err)
	}
	// go-redis adds no port: without one every dial fails.
	if a := c.Redis.Addr; a != "" && !isHostPort(a) {
		bad("redis.addr", "%q is not host:port (e.g. redis:6379)", a)
	}
	switch r := time.Duration(c.Storage.Retention); {
	case r < 0:
		bad("storage.retention", "must be 0 (keep everything) or positive, got %s", c.Storage.Retention)
	case r > 0 && r < time.Hour:
		bad("storage.retention", "must be 0 or at least 1h (WeCom retries callbacks; a dedupe key must outlive them), got %s", c.Storage.Retention)
	}
	urlKey("wecom.api_base", c.WeCom.APIBase)
	if u, err := url.Parse(c.WeCom.AIBotWSURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("wecom.aibot_ws_url", "%q is not a ws:// or wss:// URL", c.WeCom.AIBotWSURL)
	}
	if u, err := url.Parse(c.WeCom.APIBase); c.WeCom.Simulator && err == nil && isWeCom(u.Hostname()) {
		bad("wecom.simulator", "is true, but wecom.api_base %q is WeCom itself: point api_base at `wecombot simulate` (it prints its address), or set simulator to false", c.WeCom.APIBase)
	}
	positive("wecom.token_refresh_before", c.WeCom.TokenRefreshBefore)
	positive("wecom.request_timeout", c.WeCom.RequestTimeout)
	checkLLM("llm", c.LLM, func(string) bool { return true }, bad)
	if c.Admin.Username == "" {
		bad("admin.username", "is empty")
	}
	if c.Admin.Password == "" {
		bad("admin.password", "is empty: the admin API and panel need one (set WECOMBOT_ADMIN_PASSWORD)")
	}
	if c.Pipeline.Workers != nil {
		bad("pipeline.workers", "is no longer a setting: every user with a message waits on the model at once, up to llm.max_concurrency calls in flight (default %d); remove the key, or set llm.max_concurrency for a provider with a concurrency limit", adapter.DefaultMaxConcurrency)
	}
	positive("pipeline.give_up_after", c.Pipeline.GiveUpAfter)
	if l := time.Duration(c.Pipeline.Lease); l < time.Second || l > 10*time.Minute {
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
	llms := make([]LLMConfig, len(c.Bots)) // each bot's, overlaid once
	for i, b := range c.Bots {
		key := fmt.Sprintf("bots[%d]", i)
		switch {
		case b.Name == "":
			bad(key+".name", "is empty")
		case !botName.MatchString(b.Name):
			bad(key+".name", "%q may only contain a-z, 0-9, _ and -", b.Name)
		case seen[b.Name]:
			bad(key+".name", "%q is used by another bot", b.Name)
		}
		seen[b.Name] = true
		c.validateBot(key, b, bad)
		llms[i] = c.BotLLM(i)
		checkLLM(key+".llm", llms[i], botSets(b), bad)
	}
	c.checkSharedEndpoints(llms, bad)
	return errs
}

// checkLLM reports the problems of l, the keys of the llm section, as
// key's (the section, or a bot's settings: the section overlaid with the
// bot's keys). Only the keys that sets says are checked: a bot's problem
// is one of its own keys, what it inherits is the section's.
func checkLLM(key string, l LLMConfig, sets func(name string) bool, bad func(key, format string, args ...any)) {
	check := func(name string, ok bool, format string, args ...any) {
		if sets(name) && !ok {
			bad(key+"."+name, format, args...)
		}
	}
	_, ok := httpURL(l.BaseURL)
	check("base_url", ok, "%q is not an http(s) URL", l.BaseURL)
	check("model", l.Model != "", "is empty")
	check("timeout", l.Timeout > 0, "must be positive, got %s", l.Timeout)
	check("history_turns", l.HistoryTurns >= 0, "must be 0 or more, got %d", l.HistoryTurns)
	check("retries", l.Retries >= 0 && l.Retries <= 5, "must be between 0 and 5, got %d", l.Retries)
	check("max_concurrency", l.MaxConcurrency >= 1, "must be at least 1, got %d", l.MaxConcurrency)
}

// botSets says which keys of the llm section bot b sets in its own `llm:`.
func botSets(b adapter.BotConfig) func(name string) bool {
	keys := overridden(b)
	return func(name string) bool { return slices.Contains(keys, name) }
}

// overridden are the keys of the llm section that bot b sets itself, in
// the file's order.
func overridden(b adapter.BotConfig) []string {
	var keys []string
	n := resolved(&b.LLM)
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		keys = append(keys, n.Content[i].Value)
	}
	return keys
}

// BotLLM is the llm settings of the i-th bot: the llm section overlaid
// with the bot's own `llm:` keys. A value of the wrong type was reported
// and taken out as the file was read: the section's value stays.
func (c *Config) BotLLM(i int) LLMConfig {
	l := c.LLM
	if n := resolved(&c.Bots[i].LLM); n.Kind == yaml.MappingNode {
		_ = n.Decode(&l)
	}
	return l
}

// resolved is n, or what it is an alias of.
func resolved(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// modelEndpoint tells model endpoints apart: the bots whose settings have
// the same call one client, and share its limit of calls in flight
// (llm.max_concurrency) and its health.
type modelEndpoint struct {
	baseURL, apiKey, model string
	timeout                config.Duration
}

func endpointOf(l LLMConfig) modelEndpoint {
	return modelEndpoint{baseURL: l.BaseURL, apiKey: l.APIKey, model: l.Model, timeout: l.Timeout}
}

// checkSharedEndpoints reports bots that call one model endpoint with
// different max_concurrency: the endpoint has one limit of calls in flight.
// llms are the bots' settings (Config.BotLLM).
func (c *Config) checkSharedEndpoints(llms []LLMConfig, bad func(key, format string, args ...any)) {
	first := map[modelEndpoint]int{} // the first bot calling each
	for i, b := range c.Bots {
		l := llms[i]
		j, ok := first[endpointOf(l)]
		if !ok {
			first[endpointOf(l)] = i
			continue
		}
		other := llms[j]
		if other.MaxConcurrency == l.MaxConcurrency {
			continue
		}
		// Named at the bot that sets it (this one, or the first).
		at, with, n := i, j, other.MaxConcurrency
		if !botSets(b)("max_concurrency") {
			at, with, n = j, i, l.MaxConcurrency
		}
		bad(fmt.Sprintf("bots[%d].llm.max_concurrency", at),
			"is %d, but %s calls the same model (base_url, api_key, model and timeout) with %d: the bots of one model share its calls in flight; give them the same max_concurrency",
			llms[at].MaxConcurrency, c.keyName(fmt.Sprintf("bots[%d]", with)), n)
	}
}

// unknownBotLLMKeys are the keys of the bots' `llm:` that are no key of
// the llm section, as the probe reports the other unknown keys.
func unknownBotLLMKeys(root *yaml.Node) []error {
	var errs []error
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	known := yamlFields(reflect.TypeFor[LLMConfig]())
	bots := mappingValue(root.Content[0], "bots")
	if bots == nil || bots.Kind != yaml.SequenceNode {
		return nil
	}
	for i, b := range bots.Content {
		l := mappingValue(resolved(b), "llm")
		if l != nil {
			l = resolved(l)
		}
		if l == nil || l.Kind != yaml.MappingNode {
			continue
		}
		for k := 0; k+1 < len(l.Content); k += 2 {
			if name := l.Content[k]; known[name.Value] == nil {
				errs = append(errs, fmt.Errorf("config: unknown key: line %d: bots[%d].llm.%s", name.Line, i, name.Value))
			}
		}
	}
	return errs
}

// mappingValue is the value of key in mapping n; nil: none.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// validateBot checks the keys of bot b, at key, against what its kind
// (and an AI bot's mode) takes: each needed key is there and valid, and no
// key of another kind or mode is set, since WeCom would never use it and
// its presence usually means a bot configured as the wrong kind.
func (c *Config) validateBot(key string, b adapter.BotConfig, bad func(key, format string, args ...any)) {
	// what names the kind and mode in a refusal: "an AI bot (kind: aibot)".
	var what string
	refuse := func(name string, set bool) {
		if set {
			bad(key+"."+name, "is not a key of %s", what)
		}
	}
	callbackKeys := func() {
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
	// Empty kind and mode are the defaults: configurations built in code
	// (demo) are validated without ParseConfig's defaultBotKinds.
	switch b.Kind {
	case adapter.KindApp, "":
		what = "a self-built app (kind: app)"
		refuse("mode", b.Mode != "")
		refuse("bot_id", b.BotID != "")
		if b.CorpID == "" {
			bad(key+".corp_id", "is empty")
		}
		if b.AgentID <= 0 {
			bad(key+".agent_id", "must be the app's AgentId (a positive number)")
		}
		if b.Secret == "" {
			bad(key+".secret", "is empty")
		}
		callbackKeys()
		validateKF(key+".kf", b.KF, bad)
	case adapter.KindAIBot:
		what = "an AI bot (kind: aibot); 微信客服 is answered by a self-built app"
		refuse("kf", b.KF.Set())
		switch b.Mode {
		case adapter.ModeCallback, "":
			what = "an AI bot (kind: aibot)"
			refuse("corp_id", b.CorpID != "")
			refuse("agent_id", b.AgentID != 0)
			what = "an AI bot in callback mode (the long-connection secret is for mode: websocket)"
			refuse("secret", b.Secret != "")
			callbackKeys()
		case adapter.ModeWebSocket:
			what = "an AI bot (kind: aibot)"
			refuse("corp_id", b.CorpID != "")
			refuse("agent_id", b.AgentID != 0)
			what = "an AI bot in websocket mode (it has no callback)"
			refuse("token", b.Token != "")
			refuse("encoding_aes_key", b.EncodingAESKey != "")
			if b.BotID == "" {
				bad(key+".bot_id", "is empty: the long connection subscribes with the BotID")
			}
			if b.Secret == "" {
				bad(key+".secret", "is empty: the long connection subscribes with the bot's Secret")
			}
		default:
			bad(key+".mode", "%q is not one of callback, websocket", b.Mode)
		}
	default:
		bad(key+".kind", "%q is not one of app, aibot", b.Kind)
	}
}

// validateKF checks the `kf:` keys of an app: accounts are open_kfids,
// each once; the welcome fits one WeCom text.
func validateKF(key string, k adapter.KFConfig, bad func(key, format string, args ...any)) {
	if !k.Enabled && (len(k.Accounts) > 0 || k.Welcome != "") {
		bad(key+".enabled", "is false while kf.accounts or kf.welcome is set")
	}
	seen := map[string]bool{}
	for i, a := range k.Accounts {
		switch {
		case a == "":
			bad(fmt.Sprintf("%s.accounts[%d]", key, i), "is empty")
		case len(a) > 64 || strings.ContainsAny(a, " \t\n"):
			bad(fmt.Sprintf("%s.accounts[%d]", key, i), "%q is not an open_kfid (wk…)", a)
		case seen[a]:
			bad(fmt.Sprintf("%s.accounts[%d]", key, i), "%q is listed twice", a)
		}
		seen[a] = true
	}
	if len(k.Welcome) > kf.MaxTextBytes {
		bad(key+".welcome", "is %d bytes; WeCom cuts a text at %d", len(k.Welcome), kf.MaxTextBytes)
	}
}

// httpURL is v parsed, and whether it is an http(s) URL with a host.
func httpURL(v string) (*url.URL, bool) {
	u, err := url.Parse(v)
	return u, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// isHostPort says whether a is an address net.Listen and net.Dial take:
// host:port, the host possibly empty, the port a number or a service name.
func isHostPort(a string) bool {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// portOf is the port an address meant, for the example of how to write it:
// "8080" of "8080" or "localhost:8080x", else 8080.
func portOf(a string) string {
	if i := strings.LastIndexByte(a, ':'); i >= 0 {
		a = a[i+1:]
	}
	if _, err := strconv.ParseUint(a, 10, 16); err == nil {
		return a
	}
	return "8080"
}

// warnings are what the configuration allows but probably does not mean;
// `check` prints them and `serve` logs them at start, neither refuses them.
func (c *Config) warnings() []string {
	var w []string
	baseURL := func(key, v string) {
		if u, ok := httpURL(v); ok && !strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1") {
			want := *u
			want.Path = strings.TrimRight(u.Path, "/") + "/v1"
			want.RawPath = ""
			w = append(w, fmt.Sprintf("%s: the path does not end in /v1; OpenAI-compatible APIs usually need it (%s)", key, want.String()))
		}
	}
	baseURL("llm.base_url", c.LLM.BaseURL)
	for i, b := range c.Bots {
		if botSets(b)("base_url") {
			baseURL(c.keyName(fmt.Sprintf("bots[%d].llm.base_url", i)), c.BotLLM(i).BaseURL)
		}
	}
	return w
}

// isWeCom says whether host is WeCom's own API (qyapi.weixin.qq.com).
func isWeCom(host string) bool {
	host = strings.ToLower(host)
	return host == "weixin.qq.com" || strings.HasSuffix(host, ".weixin.qq.com")
}
