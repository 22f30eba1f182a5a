package web

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/storage"
)

func TestDashboard(t *testing.T) {
	e := newPanelEnv(t)
	e.seed()
	// Yesterday's message (Shanghai time) is not today's.
	old := &storage.Message{Bot: "helpdesk", DedupeKey: "old", UserID: "u", MsgType: "text", ReceivedAt: t0.Add(-11 * time.Hour)}
	_, err := e.db.InsertMessage(t.Context(), old)
	must(t, err)
	s := e.login()
	rec := e.get("/admin/", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec,
		`id="bot-helpdesk"`, "http://example.com/wecom/helpdesk/callback", `class="badge state-valid"`, ">valid<",
		`data-seconds="5280"`, "1:28:00", // 90 min after t0, and the page is rendered 2 min later
		"2026-03-02 10:00:00", // fetched at, in Shanghai time
		`<dd class="refresh-count">3</dd>`, "from gettoken",
		`id="bot-sales"`, ">error<", "errcode 60020", "add it to the app&#39;s trusted IPs (企业可信IP)", "203.0.113.7",
		`id="count-received">3<`, `id="count-answered">1<`, `id="count-failed">1<`, `id="count-pending">1<`,
		"<svg", `class="bar-msg"`, "10:00 — 3 messages, 1 answer", "messages (4)", "answers (1)",
		"Refresh token", `action="/admin/bots/helpdesk/token/refresh"`,
		// The model cards: working, and failing with what to do.
		`id="model-helpdesk"`, `<span class="badge state-ok" data-test="model-state">ok</span>`,
		`<code>gpt-test</code> <span class="muted small model-host">api.example.com</span>`,
		`<dd class="last-ok">2026-03-02 10:25:00</dd>`,
		`<section class="card model state-failing" id="model-sales"`, `<span class="badge state-failing" data-test="model-state">failing</span>`,
		"The model API cannot be reached.", "Check llm.base_url, DNS and the network",
		`<code class="last-error">llm: chat completion stream: dial tcp: lookup api.example.invalid: no such host</code>`,
	)
	if n := strings.Count(rec.Body.String(), "The model API cannot be reached."); n != 1 {
		t.Errorf("the failure is told %d times, want once (only sales fails)", n)
	}
	// In Chinese too.
	zh := e.do(request{method: "GET", path: "/admin/", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	wantBody(t, zh, ">故障<", ">正常<", "无法连接模型 API。", "请检查 llm.base_url")
	if strings.Contains(rec.Body.String(), "http://") && regexp.MustCompile(`(src|href)="https?://`).MatchString(rec.Body.String()) {
		t.Fatal("the dashboard loads something from another site")
	}
	if h := rec.Header().Get("Content-Security-Policy"); !strings.Contains(h, "default-src 'self'") || !strings.Contains(h, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", h)
	}
	// Behind a TLS proxy the callback URL is https.
	rec = e.do(request{method: "GET", path: "/admin/", cookie: s, header: map[string]string{"X-Forwarded-Proto": "https"}})
	wantBody(t, rec, "https://example.com/wecom/helpdesk/callback")

	rec = e.post("/admin/bots/helpdesk/token/refresh", s, nil)
	wantRedirect(t, rec, "/admin/?flash=token_refreshed")
	rec = e.get("/admin/?flash=token_refreshed", s)
	wantBody(t, rec, `<dd class="refresh-count">4</dd>`, "Token refreshed.")
	rec = e.post("/admin/bots/nobody/token/refresh", s, nil)
	wantStatus(t, rec, http.StatusNotFound)
	wantBody(t, rec, "unknown bot")
	if strings.Join(e.refreshed, ",") != "helpdesk,nobody" {
		t.Fatalf("refreshed %v", e.refreshed)
	}
}

// TestDashboardAIBots: each card says its kind and mode; an AI bot on the
// long connection shows the connection instead of a token, one in callback
// mode its callback URL only; neither offers a token refresh; every bot
// keeps its model card.
func TestDashboardAIBots(t *testing.T) {
	e := newPanelEnv(t)
	e.withAIBots()
	s := e.login()
	rec := e.get("/admin/", s)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	card := func(name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?s)<section class="card bot[^"]*" id="bot-` + name + `">.*?</section>`).FindString(body)
		if m == "" {
			t.Fatalf("no card for %s:\n%s", name, body)
		}
		return m
	}
	wantIn := func(what, text string, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if !strings.Contains(text, p) {
				t.Errorf("%s lacks %q:\n%s", what, p, text)
			}
		}
	}
	wantNotIn := func(what, text string, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if strings.Contains(text, p) {
				t.Errorf("%s has %q:\n%s", what, p, text)
			}
		}
	}
	wantIn("the app's card", card("helpdesk"), `data-test="kind">self-built app<`, "Refresh token", "Token expires in")
	wantNotIn("the app's card", card("helpdesk"), `data-test="mode"`)

	cb := card(aiCallbackBot)
	wantIn("the callback AI bot's card", cb, `data-test="kind">AI bot<`, `data-test="mode">callback<`,
		"http://example.com/wecom/assistant/callback")
	wantNotIn("the callback AI bot's card", cb, "Refresh token", "token/refresh", "Token expires in", "Reconnects", `data-test="state"`)

	ws := card(aiWSBot)
	wantIn("the websocket AI bot's card", ws, `<section class="card bot state-failing" id="bot-ws">`,
		`data-test="kind">AI bot<`, `data-test="mode">long connection<`,
		`<span class="badge conn-error" data-test="state">error</span>`,
		`<dd class="since">2026-03-02 10:20:00</dd>`, `<dd class="reconnects">2</dd>`,
		"aibot: subscribe refused: errcode 40001: invalid secret", "check bot_id and secret")
	wantNotIn("the websocket AI bot's card", ws, "Refresh token", "token/refresh", "Token expires in", "Callback URL")
	for _, name := range []string{"helpdesk", aiCallbackBot, aiWSBot} {
		wantBody(t, rec, `id="model-`+name+`"`)
	}
	if n := strings.Count(body, `class="refresh"`); n != 2 {
		t.Errorf("%d refresh buttons, want 2 (the apps')", n)
	}

	// A connected bot is not marked failing.
	e.bots[3].Connection = &adapter.ConnectionStatus{State: "connected", Since: t0.Add(-time.Hour), Holder: true}
	rec = e.get("/admin/", s)
	body = rec.Body.String()
	wantIn("a connected bot's card", card(aiWSBot), `<section class="card bot" id="bot-ws">`, `conn-connected" data-test="state">connected<`)

	zh := e.do(request{method: "GET", path: "/admin/", cookie: s, header: map[string]string{"Accept-Language": "zh-CN"}})
	body = zh.Body.String()
	wantIn("the Chinese app card", card("helpdesk"), ">自建应用<")
	wantIn("the Chinese callback card", card(aiCallbackBot), ">智能机器人<", ">回调<")
	wantIn("the Chinese websocket card", card(aiWSBot), ">智能机器人<", ">长连接<", ">已连接<", "重连次数")
}
