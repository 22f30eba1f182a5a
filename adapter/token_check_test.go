package adapter

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
)

func TestCheckToken(t *testing.T) {
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{tokApp}})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	w := WeComConfig{APIBase: srv.URL, RequestTimeout: config.Duration(5 * time.Second)}
	good := BotConfig{Name: "b", CorpID: tokCorpID, AgentID: tokAgentID, Secret: tokSecret}

	if err := CheckToken(t.Context(), w, good); err != nil {
		t.Fatalf("good secret: %v", err)
	}
	if n := sim.TokenFetches(tokAgentID); n != 1 {
		t.Errorf("gettoken calls = %d, want 1", n)
	}

	bad := good
	bad.Secret = "wrong-secret-never-echoed"
	err := CheckToken(t.Context(), w, bad)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != codeInvalidSecret {
		t.Fatalf("wrong secret: %v, want errcode 40001", err)
	}
	if !strings.Contains(Hint(err), "app secret is wrong") {
		t.Errorf("hint %q", Hint(err))
	}
	if strings.Contains(err.Error(), bad.Secret) {
		t.Errorf("error echoes the secret: %v", err)
	}

	srv.Close()
	if err := CheckToken(t.Context(), w, good); !strings.Contains(Hint(err), "cannot be reached") {
		t.Errorf("closed server: %v, hint %q", err, Hint(err))
	}
}
