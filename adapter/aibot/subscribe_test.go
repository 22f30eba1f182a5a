package aibot_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
)

// TestSubscribe runs the one-shot subscribe against the simulator's long
// connection: a good pair is taken and the connection let go, a wrong
// secret is refused with the hint, and an address where nothing listens
// says so.
func TestSubscribe(t *testing.T) {
	const botID, secret = "aibprobe", "probe-secret-never-echoed"
	sim := wecomsim.New(wecomsim.Options{AIBots: []wecomsim.AIBot{{BotID: botID, Secret: secret}}})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + wecomsim.AIBotWSPath

	t.Run("a good pair", func(t *testing.T) {
		if err := aibot.Subscribe(t.Context(), url, botID, secret, nil); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		if n := sim.AIBotSubscribes(botID); n != 1 {
			t.Errorf("subscribes = %d, want 1", n)
		}
		eventually.True(t, func() bool {
			_, connected := sim.AIBotConnection(botID)
			return !connected
		}, "the probe's connection to close")
		if v := sim.AIBotViolations(); len(v) > 0 {
			t.Errorf("the simulator saw violations: %v", v)
		}
	})

	t.Run("a wrong secret", func(t *testing.T) {
		const wrong = "wrong-secret-never-echoed"
		err := aibot.Subscribe(t.Context(), url, botID, wrong, nil)
		var refused *aibot.AckError
		if !errors.As(err, &refused) || refused.Code != wecomsim.AIBotErrInvalidSecret {
			t.Fatalf("Subscribe = %v, want a refusal with errcode %d", err, wecomsim.AIBotErrInvalidSecret)
		}
		if h := aibot.Hint(err); !strings.Contains(h, "bot_id or secret") {
			t.Errorf("hint %q", h)
		}
		if strings.Contains(err.Error(), wrong) {
			t.Errorf("the error echoes the secret: %v", err)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		dead := httptest.NewServer(nil)
		deadURL := "ws" + strings.TrimPrefix(dead.URL, "http")
		dead.Close()
		err := aibot.Subscribe(t.Context(), deadURL, botID, secret, nil)
		if h := aibot.Hint(err); err == nil || !strings.Contains(h, "cannot be opened") {
			t.Errorf("Subscribe = %v, hint %q", err, h)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("the error echoes the secret: %v", err)
		}
	})
}
