package adapter

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
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

// heldPageStore holds the first page's store until release is closed.
type heldPageStore struct {
	*storage.DB
	holding chan struct{} // closed when the first page waits
	release chan struct{}
	once    sync.Once
}

func (s *heldPageStore) StoreKFPage(ctx context.Context, bot, account, cursor string, msgs []storage.Message) ([]storage.Message, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.holding)
		<-s.release
	}
	return s.DB.StoreKFPage(ctx, bot, account, cursor, msgs)
}

// TestKFNewsDuringPull: news that arrives while the account is pulled is
// not lost to the pull in progress: exactly one more pull follows it, and
// no second pull runs beside the first.
func TestKFNewsDuringPull(t *testing.T) {
	e := newKFEnv(t)
	held := &heldPageStore{DB: e.db, holding: make(chan struct{}), release: make(chan struct{})}
	e.store = held
	e.start("a", true)
	e.writes(kfCustomer, "一")
	<-held.holding // the first pull has read its page and waits to store it
	calls := e.sim.KFSyncCalls(kfAccount)
	e.writes(kfCustomer, "二") // its news, during the pull
	e.writes(kfCustomer, "三")
	if n := e.sim.KFSyncCalls(kfAccount); n != calls {
		t.Errorf("%d pulls beside the one in progress", n-calls)
	}
	close(held.release)
	if got := e.received(kfCustomer, 3); got[1] != "answer to 二" || got[2] != "answer to 三" {
		t.Errorf("the customer got %q", got)
	}
	e.settled()
	if n := e.sim.KFSyncCalls(kfAccount) - calls; n != 1 {
		t.Errorf("%d pulls after the news during the pull, want 1 for both", n)
	}
}

// TestKFNoAnswerAfterWindow: an answer ready more than 48 hours after the
// customer's message is not sent: WeCom would refuse it (95002), so the
// part fails without a call.
func TestKFNoAnswerAfterWindow(t *testing.T) {
	e := newKFEnv(t)
	asked, release := make(chan struct{}), make(chan struct{})
	e.model = fakeCompleter{fn: func(msgs []llm.Message) (string, error) {
		close(asked)
		<-release
		return "too late", nil
	}}
	e.start("a", true)
	e.writes(kfCustomer, "在吗")
	<-asked
	e.clock.Advance(kfReplyWindow + time.Minute)
	calls := e.sim.KFCalls(wecomsim.APIKFSendMsg)
	close(release)
	eventually.True(t, func() bool { return e.states(storage.MessageFailed) == 1 }, "the late answer did not fail")
	if m := e.messages(storage.MessageFailed)[0]; len(m.Parts) != 1 || !strings.Contains(m.Parts[0].LastError, "48 h") {
		t.Errorf("failed message %+v; want its part failed for the 48 h window", m)
	}
	if n := e.sim.KFCalls(wecomsim.APIKFSendMsg) - calls; n != 0 {
		t.Errorf("%d sends after the window", n)
	}
}
