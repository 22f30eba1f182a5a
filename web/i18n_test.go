package web

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/llm"
)

func TestLanguage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	page := func(lang, cookie string) string {
		h := map[string]string{"Accept-Language": lang}
		r := request{method: "GET", path: "/admin/", cookie: s, header: h}
		if cookie != "" {
			r.header["Cookie"] = sessionCookie + "=" + s + "; " + langCookie + "=" + cookie
			r.cookie = ""
		}
		rec := e.do(r)
		wantStatus(t, rec, 200)
		return rec.Body.String()
	}
	cases := []struct{ accept, cookie, want string }{
		{"zh-CN,zh;q=0.9,en;q=0.8", "", "刷新令牌"},
		{"en-US,en;q=0.9", "", "Refresh token"},
		{"fr-FR, en;q=0.5, zh;q=0.4", "", "Refresh token"},
		{"de", "", "刷新令牌"}, // neither: Chinese
		{"", "", "刷新令牌"},
		{"en", "zh", "刷新令牌"}, // the switch wins
		{"zh", "en", "Refresh token"},
		{"zh", "fr", "刷新令牌"},
	}
	for _, c := range cases {
		if got := page(c.accept, c.cookie); !strings.Contains(got, c.want) {
			t.Errorf("Accept-Language %q, cookie %q: no %q", c.accept, c.cookie, c.want)
		}
	}
	rec := e.get("/admin/messages?status=failed&lang=en", s)
	wantRedirect(t, rec, "/admin/messages?status=failed")
	if c := rec.Result().Cookies(); len(c) != 1 || c[0].Name != langCookie || c[0].Value != "en" || !c[0].HttpOnly {
		t.Fatalf("language cookie %+v", c)
	}
	wantBody(t, e.get("/admin/", s), `href="/admin/?lang=zh"`, `href="/admin/?lang=en"`)
}

func TestDictionariesMatch(t *testing.T) {
	d := loadDicts()
	for k := range d[langEN] {
		if base, ok := strings.CutSuffix(k, pluralOne); ok {
			// English's singular: Chinese has one form, the base key's.
			if _, ok := d[langEN][base]; !ok {
				t.Errorf("en has %q but not %q", k, base)
			}
			continue
		}
		if _, ok := d[langZH][k]; !ok {
			t.Errorf("zh lacks %q", k)
		}
	}
	for k := range d[langZH] {
		if _, ok := d[langEN][k]; !ok {
			t.Errorf("en lacks %q", k)
		}
	}
}

// TestCausesTranslated: every cause a failure reason or a model's health
// can name has a text and a hint (the templates build their keys).
func TestCausesTranslated(t *testing.T) {
	d := loadDicts()
	causes := []string{
		llm.CauseUnreachable, llm.CauseBadKey, llm.CauseUnknownModel, llm.CauseNoQuota,
		llm.CauseRateLimited, llm.CauseTimeout, llm.CauseFailed,
		adapter.FailureInterrupted, adapter.FailureAbandoned,
		adapter.FailureKFPerson, adapter.FailureKFRecalled, adapter.FailureKFUndelivered,
	}
	for _, c := range causes {
		for _, key := range []string{"cause." + c, "cause_hint." + c} {
			if _, ok := d[langEN][key]; !ok {
				t.Errorf("no text for %q", key)
			}
		}
	}
	for _, ft := range kfFailTypes {
		if key := hintKey(adapter.FailureKFUndelivered, "fail_type "+strconv.Itoa(ft)+": x"); d[langEN][key] == "" {
			t.Errorf("no text for %q", key)
		}
	}
	for _, s := range []string{adapter.ModelOK, adapter.ModelFailing, adapter.ModelUnknown} {
		if _, ok := d[langEN]["model.state."+s]; !ok {
			t.Errorf("no text for model state %q", s)
		}
	}
	// The bot cards' kinds, modes and connection states (the hint may be
	// empty, but must be there: a missing key would show as itself).
	keys := []string{"kind." + adapter.KindApp, "kind." + adapter.KindAIBot, "mode." + adapter.ModeCallback, "mode." + adapter.ModeWebSocket}
	for _, s := range []aibot.State{aibot.StateConnecting, aibot.StateConnected, aibot.StateReplaced, aibot.StateError, adapter.StateStandby} {
		keys = append(keys, "conn.state."+string(s), "conn.hint."+string(s))
	}
	for _, key := range keys {
		if _, ok := d[langEN][key]; !ok {
			t.Errorf("no text for %q", key)
		}
	}
}

// TestPluralKeys: every count the templates show goes through .L.N with a
// key that has its English singular, and no template formats a count with
// .L.T (a "%d" text reached by T).
func TestPluralKeys(t *testing.T) {
	d := loadDicts()
	files, err := assets.ReadDir("templates")
	must(t, err)
	nKey := regexp.MustCompile(`\.L\.N "([^"]+)"`)
	tKey := regexp.MustCompile(`\.L\.T "([^"]+)"`)
	found := 0
	for _, f := range files {
		b, err := assets.ReadFile("templates/" + f.Name())
		must(t, err)
		for _, m := range nKey.FindAllStringSubmatch(string(b), -1) {
			found++
			if _, ok := d[langEN][m[1]+pluralOne]; !ok {
				t.Errorf("%s: %q has no English singular %q", f.Name(), m[1], m[1]+pluralOne)
			}
		}
		if f.Name() == "chat.html" {
			continue // its other numbers are no counts of a noun: an HTTP status, seconds, "polls: %d"
		}
		for _, m := range tKey.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(d[langEN][m[1]], "%d") {
				t.Errorf("%s: %q formats a count with .L.T, not .L.N", f.Name(), m[1])
			}
		}
	}
	if found < 5 {
		t.Errorf("%d plural keys in the templates, want at least 5", found)
	}
}

func TestPlurals(t *testing.T) {
	d := loadDicts()
	en, zh := translator{code: langEN, dict: d[langEN]}, translator{code: langZH, dict: d[langZH]}
	tests := []struct {
		tr   translator
		key  string
		n    any
		want string
	}{
		{en, "users.messages", int64(1), "1 message"},
		{en, "users.messages", int64(0), "0 messages"},
		{en, "users.messages", int64(4), "4 messages"},
		{en, "part.attempts", 1, "1 attempt"},
		{en, "part.attempts", 3, "3 attempts"},
		{en, "config.problems", 1, "The configuration has 1 problem:"},
		{en, "config.problems", 2, "The configuration has 2 problems:"},
		{zh, "users.messages", int64(1), "1 条消息"},
		{zh, "part.attempts", 1, "已尝试 1 次"},
		{zh, "config.problems", 3, "配置有 3 个问题："},
	}
	for _, tt := range tests {
		if got := tt.tr.N(tt.key, tt.n); got != tt.want {
			t.Errorf("%s N(%q, %v) = %q, want %q", tt.tr.code, tt.key, tt.n, got, tt.want)
		}
	}
}
