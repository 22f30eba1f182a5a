package adapter

import (
	"testing"

	"github.com/wecombot/wecombot/storage"
)

// TestKFUnlistedAccountIgnored: with kf.accounts set, news of another
// account is acknowledged and not pulled: nothing of it is stored, and it
// is remembered as logged.
func TestKFUnlistedAccountIgnored(t *testing.T) {
	e := newKFEnv(t)
	e.kfCfg.Accounts = []string{"wkLISTED000000000000000000000000"}
	in := e.start("a", true)
	e.writes(kfCustomer, "不在名单里") // fails unless the callback got 200
	e.writes(kfCustomer, "再一次")
	k := in.kfbots["helpdesk"]
	k.mu.Lock()
	pull, logged := k.pulls[kfAccount], k.ignored[kfAccount]
	k.mu.Unlock()
	if pull != nil || !logged {
		t.Errorf("news of an unlisted account: pull %+v, logged %v; want no pull, logged", pull, logged)
	}
	if n := e.sim.KFSyncCalls(kfAccount); n != 0 {
		t.Errorf("%d sync_msg calls for an unlisted account", n)
	}
	if n := e.states(storage.MessageReceived, storage.MessageAnswered, storage.MessageIgnored); n != 0 {
		t.Errorf("%d messages stored from an unlisted account", n)
	}
}
