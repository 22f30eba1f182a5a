package adapter

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// tokMetric returns the value of the sample of name with exactly labels in
// reg, and whether there is one.
func tokMetric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestTokenMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newTokEnv(t, wecomsim.Options{})
	tm := e.manager(t, tokManagerOptions{})
	want := func(name string, labels map[string]string, v float64) {
		t.Helper()
		got, ok := tokMetric(t, e.reg, name, labels)
		if !ok {
			t.Errorf("no %s%v", name, labels)
		} else if got != v {
			t.Errorf("%s%v = %v, want %v", name, labels, got, v)
		}
	}
	fetch := func(result string) map[string]string { return map[string]string{"bot": tokBot, "result": result} }
	bot := map[string]string{"bot": tokBot}

	want("wecombot_token_expires_in_seconds", bot, 0)
	mustGet(t, tm)
	want("wecombot_token_fetch_total", fetch("ok"), 1)
	want("wecombot_token_expires_in_seconds", bot, tokLife.Seconds())
	e.advance(100 * time.Second)
	want("wecombot_token_expires_in_seconds", bot, tokLife.Seconds()-100)

	// A refused token: the error is counted, the refetch succeeds.
	e.sim.RevokeTokens()
	if err := e.send(ctx, tm, "alice", "after a revoke"); err != nil {
		t.Fatal(err)
	}
	want("wecombot_wecom_api_errors_total", map[string]string{"bot": tokBot, "api": "message/send", "errcode": "40014"}, 1)
	want("wecombot_token_fetch_total", fetch("ok"), 2)
	want("wecombot_token_expires_in_seconds", bot, tokLife.Seconds())

	// Failed fetches, by kind.
	e.sim.FailNext(wecomsim.APIGetToken, codeRateLimited, "api freq out of limit", 1)
	if err := tm.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded through a 45009")
	}
	e.sim.FailNext(wecomsim.APIGetToken, codeInvalidSecret, "invalid credential", 1)
	if err := tm.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded through a 40001")
	}
	e.sim.SetDown(true)
	if err := tm.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded through a 503")
	}
	e.sim.SetDown(false)
	want("wecombot_token_fetch_total", fetch("api_error"), 1)
	want("wecombot_token_fetch_total", fetch("config_error"), 1)
	want("wecombot_token_fetch_total", fetch("network_error"), 1)
	want("wecombot_wecom_api_errors_total", map[string]string{"bot": tokBot, "api": "gettoken", "errcode": "45009"}, 1)
	want("wecombot_wecom_api_errors_total", map[string]string{"bot": tokBot, "api": "gettoken", "errcode": "40001"}, 1)
	want("wecombot_wecom_api_errors_total", map[string]string{"bot": tokBot, "api": "gettoken", "errcode": "http_503"}, 1)
	// The failures kept the token; its gauge counts down with the clock.
	e.advance(time.Hour)
	want("wecombot_token_expires_in_seconds", bot, tokLife.Seconds()-3600)

	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	samples := 0
	for _, mf := range mfs {
		samples += len(mf.GetMetric())
	}
	if samples != 4+1+4 {
		t.Errorf("%d samples, want 9: 4 fetch results, 1 expiry, 4 API errors", samples)
	}
}

// TestLimiterMetricsPerModel: the calls in flight and their limit are
// reported by model and host, one series a pair: endpoints of one model
// and host (another key) are added up.
func TestLimiterMetricsPerModel(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	clock := clockwork.NewFakeClock()
	log := slog.New(slog.DiscardHandler)
	a1, a2, b := newCallLimiter(10, clock, log), newCallLimiter(5, clock, log), newCallLimiter(3, clock, log)
	m.watchLimiter(a1, "model-a", "api.example")
	m.watchLimiter(b, "model-b", "dashscope.example")
	m.watchLimiter(a2, "model-a", "api.example")
	if _, err := b.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name, model, host string
		want              float64
	}{
		{"wecombot_llm_concurrency_limit", "model-a", "api.example", 15},
		{"wecombot_llm_concurrency_limit", "model-b", "dashscope.example", 3},
		{"wecombot_llm_in_flight", "model-a", "api.example", 0},
		{"wecombot_llm_in_flight", "model-b", "dashscope.example", 1},
	} {
		if got, ok := tokMetric(t, reg, w.name, map[string]string{"model": w.model, "host": w.host}); !ok || got != w.want {
			t.Errorf("%s{model=%s,host=%s} = %v (%v), want %v", w.name, w.model, w.host, got, ok, w.want)
		}
	}
}

func TestFloodMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	clock := clockwork.NewFakeClock()
	f := newFloodGuard(clock, slog.New(slog.DiscardHandler))
	m.watchFlood(f)
	flood := func() float64 {
		t.Helper()
		v, ok := tokMetric(t, reg, "wecombot_flood", map[string]string{})
		if !ok {
			t.Fatal("no wecombot_flood")
		}
		return v
	}
	if v := flood(); v != 0 {
		t.Errorf("wecombot_flood = %v before any message, want 0", v)
	}
	for range floodArrivals + 1 {
		f.arrived()
	}
	if v := flood(); v != 1 {
		t.Errorf("wecombot_flood = %v with %d messages in a second, want 1", v, floodArrivals+1)
	}
	clock.Advance(2 * time.Second) // nothing arrived since: the flood is over, with nobody answering
	if v := flood(); v != 0 {
		t.Errorf("wecombot_flood = %v a second after the last message, want 0", v)
	}
}
