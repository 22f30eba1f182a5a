package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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

// TestKill9KF kills the real binary with SIGKILL while answers to 微信客服
// customers are with the model or in the outbox, lets customers write while
// it is down (their callbacks fail), and restarts it: every customer
// message is answered exactly once, nothing of the history before the
// account started is answered, and the cursor is not replayed.
func TestKill9KF(t *testing.T) {
	const account = "wkKILLKF00000000000000000000000A"
	bin := buildBinary(t)
	aesKey := wecomsim.NewEncodingAESKey()
	var ago atomic.Int64 // how far the simulator's clock is behind
	ago.Store(int64(time.Hour))
	sim := wecomsim.New(wecomsim.Options{
		Apps:       []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: account, AgentID: testAgent}},
		Now:        func() time.Time { return time.Now().Add(-time.Duration(ago.Load())) },
	})
	simSrv := httptest.NewServer(sim.Handler())
	defer simSrv.Close()
	ctx := context.Background()
	// History: written an hour before the service first ran.
	if _, err := sim.KFCustomerWrites(ctx, account, "wmOLD", "旧消息"); err != nil {
		t.Fatal(err)
	}
	ago.Store(0)
	slow, fake, addr, cfgPath := crashSetup(t, simSrv.URL, aesKey, "    kf: {enabled: true}\n")
	p := startBinary(t, bin, cfgPath, addr)
	sim.SetKFCallback(testAgent, &wecomsim.Callback{URL: "http://" + addr + "/wecom/helpdesk/callback", Token: testToken, EncodingAESKey: aesKey, CorpID: testCorp})

	customers := []string{"wmA", "wmB", "wmC", "wmD", "wmE"}
	var questions []string
	write := func(c, q string, up bool) {
		t.Helper()
		questions = append(questions, q)
		if _, err := sim.KFCustomerWrites(ctx, account, c, q); (err == nil) != up {
			t.Fatalf("%s writes %q: callback error %v (service up: %v)", c, q, err, up)
		}
	}
	for round := range 2 {
		for _, c := range customers {
			write(c, fmt.Sprintf("%s 问题 %d", c, round), true)
		}
	}
	// Kill when some answers are out and others are with the model.
	eventually.Within(withLog{t, cfgPath + ".log"}, 10*time.Second, func() bool {
		return len(sim.KFReceived(account, "")) >= 2
	}, "no answers before the kill")
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	t.Logf("killed with %d model calls started and %d answers received", fake.Calls(), len(sim.KFReceived(account, "")))
	// News while the service is down: the callbacks fail.
	for _, c := range customers[:2] {
		write(c, c+" 停机时", false)
	}

	slow.Store(false)
	startBinary(t, bin, cfgPath, addr)
	// One more message per customer: answers are in order per customer, so
	// once these arrive every earlier answer (and any duplicate) has too.
	for _, c := range customers {
		write(c, c+" 最后", true)
	}
	eventually.Within(withLog{t, cfgPath + ".log"}, 30*time.Second, func() bool {
		done := 0
		for _, m := range sim.KFReceived(account, "") {
			if strings.HasSuffix(m.Content, " 最后") {
				done++
			}
		}
		return done == len(customers)
	}, "the last answers of %d customers did not all arrive", len(customers))
	count := map[string]int{}
	for _, m := range sim.KFReceived(account, "") {
		count[m.Content]++
	}
	for _, q := range questions {
		if n := count["answer to "+q]; n != 1 {
			t.Errorf("%q answered %d times, want exactly 1", q, n)
		}
	}
	if n := len(sim.KFReceived(account, "wmOLD")); n != 0 {
		t.Errorf("the history before the account started got %d answers", n)
	}
	if n := len(sim.KFReceived(account, "")); n != len(questions) {
		t.Errorf("%d messages sent for %d questions", n, len(questions))
	}
}
