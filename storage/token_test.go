package storage

import (
	"errors"
	"testing"
	"time"
)

func loadToken(t *testing.T, db *DB, bot string) Token {
	t.Helper()
	tok, err := db.LoadToken(t.Context(), bot)
	must(t, err)
	return tok
}

func TestLoadTokenNotFound(t *testing.T) { eachDriver(t, testLoadTokenNotFound) }

func testLoadTokenNotFound(t *testing.T) {
	db, _ := newDB(t)
	_, err := db.LoadToken(t.Context(), "nobody")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadToken err = %v, want ErrNotFound", err)
	}
}

func TestTokenLifecycle(t *testing.T) { eachDriver(t, testTokenLifecycle) }

func testTokenLifecycle(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	cst := time.FixedZone("CST", 8*3600)

	first := Token{Bot: "bot", CorpID: "corp", AgentID: 1000002, Value: "v1",
		ExpiresAt: t0.Add(7200 * time.Second).In(cst), FetchedAt: t0}
	must(t, db.SaveToken(ctx, first))
	got := loadToken(t, db, "bot")
	if got.Bot != "bot" || got.CorpID != "corp" || got.AgentID != 1000002 || got.Value != "v1" ||
		got.RefreshCount != 1 || got.LastError != "" {
		t.Errorf("after first SaveToken = %+v", got)
	}
	sameTime(t, "ExpiresAt", got.ExpiresAt, first.ExpiresAt)
	sameTime(t, "FetchedAt", got.FetchedAt, first.FetchedAt)
	sameTime(t, "UpdatedAt", got.UpdatedAt, t0)

	clk.Advance(time.Hour)
	second := first
	second.Value, second.FetchedAt, second.ExpiresAt = "v2", clk.now, clk.now.Add(2*time.Hour)
	must(t, db.SaveToken(ctx, second))
	got = loadToken(t, db, "bot")
	if got.Value != "v2" || got.RefreshCount != 2 {
		t.Errorf("after second SaveToken value=%q count=%d, want v2, 2", got.Value, got.RefreshCount)
	}
	sameTime(t, "ExpiresAt", got.ExpiresAt, second.ExpiresAt)
	sameTime(t, "FetchedAt", got.FetchedAt, second.FetchedAt)

	// A failed refresh keeps the still-valid token.
	clk.Advance(time.Minute)
	must(t, db.SaveTokenError(ctx, "bot", "corp", 1000002, "errcode 40013"))
	got = loadToken(t, db, "bot")
	if got.Value != "v2" || got.LastError != "errcode 40013" || got.RefreshCount != 2 {
		t.Errorf("after SaveTokenError = %+v, want v2 kept, error set, count 2", got)
	}
	sameTime(t, "ExpiresAt", got.ExpiresAt, second.ExpiresAt)
	sameTime(t, "UpdatedAt", got.UpdatedAt, clk.now)

	clk.Advance(time.Minute)
	third := second
	third.Value = "v3"
	must(t, db.SaveToken(ctx, third))
	got = loadToken(t, db, "bot")
	if got.Value != "v3" || got.LastError != "" || got.RefreshCount != 3 {
		t.Errorf("after third SaveToken = %+v, want v3, no error, count 3", got)
	}
	sameTime(t, "UpdatedAt", got.UpdatedAt, clk.now)
}

func TestSaveTokenErrorWithoutToken(t *testing.T) { eachDriver(t, testSaveTokenErrorWithoutToken) }

func testSaveTokenErrorWithoutToken(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	must(t, db.SaveTokenError(ctx, "bot", "corp", 7, "network down"))
	got := loadToken(t, db, "bot")
	if got.Value != "" || got.LastError != "network down" || got.RefreshCount != 0 || got.CorpID != "corp" || got.AgentID != 7 {
		t.Errorf("LoadToken = %+v, want an empty token carrying the error", got)
	}
	if !got.ExpiresAt.IsZero() {
		t.Errorf("ExpiresAt = %v, want zero", got.ExpiresAt)
	}
	must(t, db.SaveToken(ctx, Token{Bot: "bot", CorpID: "corp", AgentID: 7, Value: "v", ExpiresAt: t0.Add(time.Hour)}))
	if got := loadToken(t, db, "bot"); got.Value != "v" || got.LastError != "" || got.RefreshCount != 1 {
		t.Errorf("after SaveToken = %+v, want v, no error, count 1", got)
	}
}

func TestForgetToken(t *testing.T) { eachDriver(t, testForgetToken) }

func testForgetToken(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	exp := t0.Add(time.Hour)
	must(t, db.SaveToken(ctx, Token{Bot: "a", CorpID: "c", AgentID: 1, Value: "va", ExpiresAt: exp}))
	must(t, db.SaveToken(ctx, Token{Bot: "b", CorpID: "c", AgentID: 2, Value: "vb", ExpiresAt: exp}))

	tests := []struct {
		name, bot, value string
		wantA, wantB     string
	}{
		{"stale value", "a", "old", "va", "vb"},
		{"other bot's value", "a", "vb", "va", "vb"},
		{"unknown bot", "zzz", "va", "va", "vb"},
		{"current value", "a", "va", "", "vb"},
	}
	for _, tt := range tests {
		clk.Advance(time.Second)
		must(t, db.ForgetToken(ctx, tt.bot, tt.value))
		a, b := loadToken(t, db, "a"), loadToken(t, db, "b")
		if a.Value != tt.wantA || b.Value != tt.wantB {
			t.Errorf("%s: values = %q, %q; want %q, %q", tt.name, a.Value, b.Value, tt.wantA, tt.wantB)
		}
	}
	a := loadToken(t, db, "a")
	if !a.ExpiresAt.IsZero() {
		t.Errorf("forgotten token ExpiresAt = %v, want zero", a.ExpiresAt)
	}
	sameTime(t, "UpdatedAt", a.UpdatedAt, clk.now)
	if a.RefreshCount != 1 {
		t.Errorf("RefreshCount = %d, want 1", a.RefreshCount)
	}
	sameTime(t, "other bot's ExpiresAt", loadToken(t, db, "b").ExpiresAt, exp)
}
