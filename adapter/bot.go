package adapter

import (
	"context"
	"time"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
	"github.com/wecombot/wecombot/internal/config"
)

// BotConfig is one entry of `bots:`: a WeCom self-built app.
type BotConfig struct {
	Name           string `yaml:"name"`
	CorpID         string `yaml:"corp_id"`
	AgentID        int64  `yaml:"agent_id"`
	Secret         string `yaml:"secret"`
	Token          string `yaml:"token"`
	EncodingAESKey string `yaml:"encoding_aes_key"`
}

// WeComConfig is the `wecom:` section: WeCom's API, for every bot.
type WeComConfig struct {
	APIBase string `yaml:"api_base"`
	// TokenRefreshBefore is how long before its expiry an access token is
	// replaced.
	TokenRefreshBefore config.Duration `yaml:"token_refresh_before"`
	// RequestTimeout bounds every WeCom API call.
	RequestTimeout config.Duration `yaml:"request_timeout"`
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
