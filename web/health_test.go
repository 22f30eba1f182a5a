package web

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

func TestReadyz(t *testing.T) {
	gin.SetMode(gin.TestMode)
	exp := time.Date(2026, 3, 2, 4, 0, 0, 0, time.UTC)
	valid := adapter.TokenStatus{State: adapter.TokenValid, ExpiresAt: exp, Source: adapter.SourceGettoken}
	refused := adapter.TokenStatus{State: adapter.TokenError, LastError: "wecom: gettoken: errcode 40001: invalid credential",
		Hint: "check bots[].secret"}
	cases := []struct {
		name      string
		tokens    []adapter.TokenStatus // of bots b0, b1…
		dbDown    bool
		wantReady bool
		wantBots  map[string]string
	}{
		{"every token valid", []adapter.TokenStatus{valid, valid}, false, true,
			map[string]string{"b0": "valid", "b1": "valid"}},
		{"a proactive refresh", []adapter.TokenStatus{valid, {State: adapter.TokenRefreshing, ExpiresAt: exp}}, false, true,
			map[string]string{"b0": "valid", "b1": "refreshing"}},
		{"a refused token is a known reason", []adapter.TokenStatus{valid, refused}, false, true,
			map[string]string{"b0": "valid", "b1": "error: " + refused.LastError}},
		{"a retry after an error", []adapter.TokenStatus{{State: adapter.TokenRefreshing, LastError: refused.LastError}}, false, true,
			map[string]string{"b0": "refreshing"}},
		{"no bots", nil, false, true, map[string]string{}},
		{"the first fetch in flight", []adapter.TokenStatus{valid, {State: adapter.TokenRefreshing}}, false, false,
			map[string]string{"b0": "valid", "b1": "refreshing"}},
		{"no token yet", []adapter.TokenStatus{{State: adapter.TokenNone}, valid}, false, false,
			map[string]string{"b0": "none", "b1": "valid"}},
		{"an error without a reason", []adapter.TokenStatus{{State: adapter.TokenError}}, false, false,
			map[string]string{"b0": "error"}},
		{"expired, not refreshed", []adapter.TokenStatus{{State: adapter.TokenExpired, ExpiresAt: exp}}, false, false,
			map[string]string{"b0": "expired"}},
		{"the database is down", []adapter.TokenStatus{valid}, true, false,
			map[string]string{"b0": "valid"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := storage.Open(t.Context(), storage.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "r.db")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if c.dbDown {
				db.Close()
			}
			var bots []adapter.BotStatus
			for i, tok := range c.tokens {
				bots = append(bots, adapter.BotStatus{Name: "b" + itoa(int64(i)), CorpID: "ww1", AgentID: int64(i + 1), Token: tok})
			}
			e := gin.New()
			New(Options{Admin: AdminConfig{Username: "admin", Password: "s3cret-pw"}, Store: db,
				Bots: fakeBots{list: func() []adapter.BotStatus { return bots }},
				Log:  slog.New(slog.NewTextHandler(io.Discard, nil))}).Routes(e)

			rec := do(e, "GET", "/readyz", "", "") // no credentials needed
			want := http.StatusOK
			if !c.wantReady {
				want = http.StatusServiceUnavailable
			}
			if rec.Code != want {
				t.Fatalf("status %d, want %d: %s", rec.Code, want, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("Content-Type %q", ct)
			}
			var got struct {
				Ready    bool              `json:"ready"`
				Database string            `json:"database"`
				Bots     map[string]string `json:"bots"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s: %v", rec.Body, err)
			}
			if got.Ready != c.wantReady || !reflect.DeepEqual(got.Bots, c.wantBots) {
				t.Fatalf("got %+v, want ready %v, bots %v", got, c.wantReady, c.wantBots)
			}
			switch {
			case c.dbDown && !strings.Contains(got.Database, "storage: ping"):
				t.Fatalf("database %q, want the ping's error", got.Database)
			case !c.dbDown && got.Database != "ok":
				t.Fatalf("database %q, want ok", got.Database)
			}
			if strings.Contains(rec.Body.String(), "s3cret-pw") || strings.Contains(rec.Body.String(), "check bots") {
				t.Fatalf("/readyz says more than it should: %s", rec.Body)
			}
		})
	}
}

// TestReadyzAIBots: an AI bot has no token; in callback mode it is ready,
// on the long connection it is ready by its connection as an app is by
// its token.
func TestReadyzAIBots(t *testing.T) {
	gin.SetMode(gin.TestMode)
	cases := []struct {
		name      string
		conn      *adapter.ConnectionStatus // nil: callback mode
		wantReady bool
		want      string
	}{
		{"callback mode", nil, true, "callback"},
		{"connected", &adapter.ConnectionStatus{State: "connected"}, true, "connected"},
		{"another instance holds it", &adapter.ConnectionStatus{State: adapter.StateStandby}, true, "standby"},
		{"a refused subscribe is a known reason", &adapter.ConnectionStatus{State: "error", LastError: "errcode 40001"}, true, "error: errcode 40001"},
		{"taken over", &adapter.ConnectionStatus{State: "replaced", LastError: "disconnected_event"}, true, "replaced: disconnected_event"},
		{"a reconnect after a drop", &adapter.ConnectionStatus{State: "connecting", Reconnects: 1, LastError: "EOF"}, true, "connecting"},
		{"the first dial in flight", &adapter.ConnectionStatus{State: "connecting"}, false, "connecting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mode := adapter.ModeCallback
			if c.conn != nil {
				mode = adapter.ModeWebSocket
			}
			bots := []adapter.BotStatus{{Name: "ai", Kind: adapter.KindAIBot, Mode: mode, Connection: c.conn}}
			db, err := storage.Open(t.Context(), storage.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "r.db")})
			must(t, err)
			t.Cleanup(func() { db.Close() })
			e := gin.New()
			New(Options{Store: db, Bots: fakeBots{list: func() []adapter.BotStatus { return bots }},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Routes(e)
			rec := do(e, "GET", "/readyz", "", "")
			var got struct {
				Ready bool              `json:"ready"`
				Bots  map[string]string `json:"bots"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s: %v", rec.Body, err)
			}
			if got.Ready != c.wantReady || got.Bots["ai"] != c.want {
				t.Fatalf("got %s, want ready %v, ai %q", rec.Body, c.wantReady, c.want)
			}
		})
	}
}
