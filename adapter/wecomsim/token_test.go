package wecomsim

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGetToken(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, corp, secret string
		want               int
	}{
		{"unknown corp", "ww-nope", secret, 40013},
		{"wrong secret", corpID, "nope", 40001},
		{"missing corpid", "", secret, 41002},
		{"missing secret", corpID, "", 41004},
		{"ok", corpID, secret, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.getToken(t, tt.corp, tt.secret)
			if res.ErrCode != tt.want {
				t.Fatalf("errcode = %d (%s), want %d", res.ErrCode, res.ErrMsg, tt.want)
			}
			if tt.want != 0 {
				if !strings.Contains(res.ErrMsg, "more info at") {
					t.Errorf("errmsg %q lacks WeCom's decoration", res.ErrMsg)
				}
				return
			}
			if len(res.AccessToken) < 64 || res.ExpiresIn != 7200 || res.ErrMsg != "ok" {
				t.Errorf("got %+v", res)
			}
		})
	}
	if got := f.do(t, http.MethodPost, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+secret, ""); got.ErrCode != 43001 {
		t.Errorf("POST gettoken: errcode %d, want 43001", got.ErrCode)
	}
	if n := f.sim.TokenFetches(agentID); n != 1 {
		t.Errorf("TokenFetches = %d, want 1", n)
	}
	if n := f.sim.TotalTokenFetches(); n != 6 {
		t.Errorf("TotalTokenFetches = %d, want 6", n)
	}
	if got := f.sim.Rejected(); got[40013] != 1 || got[40001] != 1 || got[43001] != 1 {
		t.Errorf("Rejected = %v", got)
	}
}

func TestTokensPerApp(t *testing.T) {
	f := newFixture(t, nil)
	a := f.token(t)
	b := f.token(t)
	if a == b {
		t.Fatal("a repeat fetch returned the same token without SameTokenWhileValid")
	}
	// The earlier token keeps working until its own expiry.
	for _, tok := range []string{a, b} {
		if res := f.send(t, tok, text("zhangsan", "hi")); res.ErrCode != 0 {
			t.Fatalf("send with %s…: %+v", tok[:8], res)
		}
	}
	if f.sim.CurrentToken(agentID) != b {
		t.Error("CurrentToken is not the newest token")
	}
	other := f.getToken(t, corpID, "other-secret")
	if res := f.send(t, other.AccessToken, text("zhangsan", "hi")); res.ErrCode != 301002 {
		t.Errorf("token of app 1000003 used for agent %d: errcode %d, want 301002", agentID, res.ErrCode)
	}
	if f.sim.TokenFetches(agentID) != 2 || f.sim.TokenFetches(1000003) != 1 {
		t.Errorf("fetches %d/%d", f.sim.TokenFetches(agentID), f.sim.TokenFetches(1000003))
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TokenLifetime = time.Hour })
	tok := f.token(t)
	f.clock.Advance(time.Hour - time.Second)
	if res := f.send(t, tok, text("zhangsan", "before")); res.ErrCode != 0 {
		t.Fatalf("just before expiry: %+v", res)
	}
	f.clock.Advance(time.Second)
	if res := f.send(t, tok, text("zhangsan", "after")); res.ErrCode != 42001 {
		t.Fatalf("at expiry: errcode %d, want 42001", res.ErrCode)
	}

	f.sim.SetTokenLifetime(90*time.Second + 500*time.Millisecond)
	if res := f.getToken(t, corpID, secret); res.ExpiresIn != 90 {
		t.Errorf("expires_in = %d, want whole seconds 90", res.ExpiresIn)
	}
}

// TestSameTokenWhileValid shows the trap: the second answer claims a full
// lifetime, but the token dies at its first expiry.
func TestSameTokenWhileValid(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.SameTokenWhileValid = true })
	first := f.getToken(t, corpID, secret)
	f.clock.Advance(time.Hour)
	second := f.getToken(t, corpID, secret)
	if second.AccessToken != first.AccessToken {
		t.Fatal("repeat fetch returned a new token")
	}
	if second.ExpiresIn != 7200 {
		t.Fatalf("expires_in = %d, want a full 7200", second.ExpiresIn)
	}
	f.clock.Advance(time.Hour)
	if res := f.send(t, second.AccessToken, text("zhangsan", "hi")); res.ErrCode != 42001 {
		t.Fatalf("errcode %d, want 42001: the token expired 2h after its first issue", res.ErrCode)
	}
	third := f.getToken(t, corpID, secret)
	if third.AccessToken == first.AccessToken {
		t.Fatal("no new token after expiry")
	}
	if f.sim.TokenFetches(agentID) != 3 {
		t.Errorf("TokenFetches = %d, want 3", f.sim.TokenFetches(agentID))
	}
}
