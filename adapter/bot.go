package adapter

import (
	"context"
	"errors"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/internal/config"
)

// Bot kinds (bots[].kind) and AI bot modes (bots[].mode).
const (
	// KindApp is a self-built app (自建应用): callbacks in, message/send
	// out, with an access token. An empty Kind is KindApp.
	KindApp = "app"
	// KindAIBot is an AI bot (智能机器人): answers stream in place, in one
	// of the two modes below.
	KindAIBot = "aibot"
	// ModeCallback is the AI bot's API mode with a URL callback: WeCom
	// posts to us and polls the stream. An empty Mode of an AI bot is
	// ModeCallback.
	ModeCallback = "callback"
	// ModeWebSocket is the AI bot's long connection: we dial WeCom and
	// push the stream.
	ModeWebSocket = "websocket"
)

// BotConfig is one entry of `bots:`: a self-built app or an AI bot. Which
// keys a kind (and an AI bot's mode) takes is checked by cmd/wecombot.
type BotConfig struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // KindApp or KindAIBot
	Mode string `yaml:"mode"` // AI bot only: ModeCallback or ModeWebSocket
	// CorpID and AgentID: app only.
	CorpID  string `yaml:"corp_id"`
	AgentID int64  `yaml:"agent_id"`
	// Secret is the app's Secret, or an AI bot's long-connection Secret.
	Secret string `yaml:"secret"`
	// Token and EncodingAESKey: app, or AI bot in callback mode.
	Token          string `yaml:"token"`
	EncodingAESKey string `yaml:"encoding_aes_key"`
	// BotID is an AI bot's BotID (aibotid): required by the long
	// connection; in callback mode, when set, callbacks of another bot id
	// are refused.
	BotID string `yaml:"bot_id"`
	// KF: app only. The app also answers 微信客服 customers.
	KF KFConfig `yaml:"kf"`
	// LLM is the bot's `llm:` keys as the file has them (${VAR} expanded):
	// any key of the `llm:` section, overriding it for this bot. cmd
	// overlays them on the section and hands the result to the pipeline
	// (PipelineConfig.Bots); the adapter does not read this.
	LLM yaml.Node `yaml:"llm,omitempty"`
}

// KFConfig is `bots[].kf`: whether a self-built app answers the customers
// of 微信客服 (WeChat customer service) accounts, with its own access token
// and through its own callback URL.
type KFConfig struct {
	Enabled bool `yaml:"enabled"`
	// Accounts are the open_kfids answered; empty: every account that
	// calls back.
	Accounts []string `yaml:"accounts"`
	// Welcome is sent when a customer enters a conversation and WeCom
	// gives a welcome_code; empty: nothing.
	Welcome string `yaml:"welcome"`
}

// Set reports whether any key of `kf:` is set (cmd refuses them on AI bots).
func (k KFConfig) Set() bool { return k.Enabled || len(k.Accounts) > 0 || k.Welcome != "" }

// WeComConfig is the `wecom:` section: WeCom's API, for every bot.
type WeComConfig struct {
	APIBase string `yaml:"api_base"`
	// TokenRefreshBefore is how long before its expiry an access token is
	// replaced.
	TokenRefreshBefore config.Duration `yaml:"token_refresh_before"`
	// RequestTimeout bounds every WeCom API call.
	RequestTimeout config.Duration `yaml:"request_timeout"`
	// AIBotWSURL is where AI bots in websocket mode dial their long
	// connection: WeCom, a proxy, or the simulator.
	AIBotWSURL string `yaml:"aibot_ws_url"`
}

// bot is one configured WeCom app at run time.
type bot struct {
	cfg    BotConfig
	cipher *wxcrypto.Cipher
	tokens *TokenManager
	api    *apiClient
}

// sendText delivers one text to user through message/send, healing a
// refused token. dupCheck > 0 asks WeCom to drop it if an identical text
// reached the user within that interval (for resends whose first attempt may
// have been delivered).
func (b *bot) sendText(ctx context.Context, user, content string, dupCheck time.Duration) (string, error) {
	body, err := textRequest(user, b.cfg.AgentID, content, dupCheck)
	if err != nil {
		return "", err
	}
	var msgID string
	err = b.tokens.Do(ctx, "message/send", func(ctx context.Context, token string) error {
		var err error
		msgID, err = b.api.sendMessage(ctx, token, body)
		return err
	})
	return msgID, err
}

// FetchMedia downloads the image ref names (its media_id: a message of the
// app, or of a 微信客服 customer) through media/get, healing a refused
// token.
func (b *bot) FetchMedia(ctx context.Context, ref MediaRef, limit int64) ([]byte, error) {
	if ref.MediaID == "" {
		return nil, errors.New("adapter: image without media_id")
	}
	var data []byte
	err := b.tokens.Do(ctx, "media/get", func(ctx context.Context, token string) error {
		var err error
		data, err = b.api.getMedia(ctx, token, ref.MediaID, limit)
		return err
	})
	return data, err
}
