package adapter

import (
	"fmt"
	"testing"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// TestKFCustomers: the panel's nicknames come from kf/customer/batchget in
// one call per 100 customers, are cached for kfNameTTL (unknown customers
// too), and a failed call leaves the ids bare and is not repeated for
// kfNameRetry.
func TestKFCustomers(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	e.writes(kfCustomer, "你好")
	e.received(kfCustomer, 1)
	e.sim.SetKFNickname(kfCustomer, "张三")
	ctx := t.Context()
	known, unknown := kfUser(kfAccount, kfCustomer), kfUser(kfAccount, "wmNOBODY")
	users := []string{known, unknown, "zhangsan", "kf:broken", known}
	calls := func(want int) {
		t.Helper()
		if n := e.sim.KFBatchGetCalls(); n != want {
			t.Fatalf("batchget calls = %d, want %d", n, want)
		}
	}
	want := KFCustomer{OpenKfID: kfAccount, ExternalUserID: kfCustomer, Nickname: "张三"}
	lookup := func(what string, wantKnown bool) {
		t.Helper()
		got := in.KFCustomers(ctx, "helpdesk", users)
		if wantKnown && (len(got) != 1 || got[known] != want) || !wantKnown && len(got) != 0 {
			t.Errorf("%s: KFCustomers = %+v", what, got)
		}
	}
	lookup("first", true)
	calls(1)
	lookup("cached", true)
	calls(1)

	// Expired: asked again, and this time WeCom fails.
	e.clock.Advance(kfNameTTL)
	e.sim.FailNext(wecomsim.APIKFBatchGet, kf.CodeSystemBusy, "system busy", 1)
	lookup("failed", false)
	lookup("failed, within kfNameRetry", false)
	calls(1)
	e.clock.Advance(kfNameRetry)
	lookup("after kfNameRetry", true)
	calls(2)

	// 150 customers not cached: two calls.
	var many []string
	for i := range 150 {
		many = append(many, kfUser(kfAccount, fmt.Sprintf("wmMANY%03d", i)))
	}
	if got := in.KFCustomers(ctx, "helpdesk", many); len(got) != 0 {
		t.Errorf("customers the simulator does not know: %+v", got)
	}
	calls(4)
	if got := in.KFCustomers(ctx, "nobody", users); len(got) != 0 {
		t.Errorf("unknown bot: %+v", got)
	}
}
