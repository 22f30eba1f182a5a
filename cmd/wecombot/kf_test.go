package main

import (
	"context"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// TestServeKF: an app with kf.enabled in the configuration answers a
// 微信客服 customer end to end, and keeps the account's cursor across a
// restart: the customer is answered once per message.
func TestServeKF(t *testing.T) {
	const account, customer = "wkSERVEKF0000000000000000000000A", "wmSERVE01"
	sim := wecomsim.New(wecomsim.Options{
		Apps:       []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: account, AgentID: testAgent}},
	})
	e := prepareEnv(t, sim.Handler(), func(r llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: "answer to " + r.Messages[len(r.Messages)-1].Content}
	})
	e.sim = sim
	e.moreBots = "    kf: {enabled: true, accounts: [" + account + "], welcome: 欢迎}\n"
	e.start()
	callback := func() {
		sim.SetKFCallback(testAgent, &wecomsim.Callback{URL: e.cb.URL, Token: testToken, EncodingAESKey: e.aesKey, CorpID: testCorp})
	}
	callback()
	ctx := context.Background()
	if _, err := sim.KFCustomerEnters(ctx, account, customer, "1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := sim.KFCustomerWrites(ctx, account, customer, "你好"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return len(sim.KFReceived(account, customer)) == 2 }, "want the welcome and the answer")
	e.restart()
	callback()
	if _, err := sim.KFCustomerWrites(ctx, account, customer, "再见"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return len(sim.KFReceived(account, customer)) >= 3 }, "no answer after the restart")
	got := sim.KFReceived(account, customer)
	if len(got) != 3 || got[0].Content != "欢迎" || !got[0].OnEvent || got[1].Content != "answer to 你好" || got[2].Content != "answer to 再见" {
		t.Errorf("the customer got %+v", got)
	}
}
