package adapter

import (
	"context"
	"time"

	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// BotConfig is one entry of `bots:`: a WeCom self-built app.
type BotConfig struct {
	Name           string
	CorpID         string
	AgentID        int64
	Secret         string
	Token          string
	EncodingAESKey string
}

// WeComConfig is the `wecom:` section.
type WeComConfig struct {
	APIBase            string
	TokenRefreshBefore time.Duration
	// RequestTimeout bounds every WeCom API call.
	RequestTimeout time.Duration
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
