package web

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

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
		"<svg", `class="bar-msg"`, "10:00 — 3 messages, 1 answers", "messages (4)", "answers (1)",
		"Refresh token", `action="/admin/bots/helpdesk/token/refresh"`,
		// The model cards: working, and failing with what to do.
		`id="model-helpdesk"`, `<span class="badge state-ok" data-test="model-state">ok</span>`, `<code>gpt-test</code>`,
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
