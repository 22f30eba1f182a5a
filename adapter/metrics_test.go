package adapter

import (
	"context"
	"testing"
	"time"

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
