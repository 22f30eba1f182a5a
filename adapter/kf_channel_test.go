package adapter

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/redistest"
)

// The kf channel is tested against the simulator playing 微信客服: its
// callbacks reach the service's real callback endpoint (httptest), the
// service pulls and sends through the simulator's API. Time is a fake clock
// shared by the simulator, the database and the service; what the network
// decides is waited for with eventually.

const (
	kfCorp     = "wwkfcorp00000001"
	kfAgent    = 1000002
	kfSecret   = "kf-app-Secret-never-shown"
	kfToken    = "kfcbtoken"
	kfAccount  = "wkKFACCOUNT00000000000000000000A"
	kfCustomer = "wmCUSTOMER0001"
)

type kfEnv struct {
	t      *testing.T
	sim    *wecomsim.Server
	clock  *clockwork.FakeClock
	db     *storage.DB
	api    string
	aesKey string
	model  Completer
	kfCfg  KFConfig
	// llm and replies, when set, are the pipeline's (images).
	llm     LLMConfig
	replies *Replies
	// store wraps db for the instances when set (fault injection).
	store Store
	// redis, when set, gives each instance a database of its own, with
	// leases and message claims in Redis.
	redis *storage.Redis
}

func newKFEnv(t *testing.T) *kfEnv {
	t.Helper()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	sim := wecomsim.New(wecomsim.Options{
		Apps:       []wecomsim.App{{CorpID: kfCorp, AgentID: kfAgent, Secret: kfSecret}},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: kfAccount, AgentID: kfAgent}},
		Now:        clk.Now,
	})
	ts := httptest.NewServer(sim.Handler())
	t.Cleanup(ts.Close)
	db := openTestDB(t)
	db.Now = clk.Now
	return &kfEnv{t: t, sim: sim, clock: clk, db: db, api: ts.URL, aesKey: wecomsim.NewEncodingAESKey(),
		kfCfg: KFConfig{Enabled: true},
		model: fakeCompleter{fn: func(msgs []llm.Message) (string, error) {
			return "answer to " + msgs[len(msgs)-1].Content, nil
		}}}
}

type kfInstance struct {
	*App
	db   *storage.DB
	reg  *prometheus.Registry
	url  string
	stop func()
}

// start runs an instance on the shared database and points the account's
// callbacks at it.
func (e *kfEnv) start(owner string, exclusive bool) *kfInstance {
	e.t.Helper()
	db := e.db
	var store Store = e.db
	if e.store != nil {
		store = e.store
	}
	var leases ConnectionLeases
	var claims MessageClaims
	if e.redis != nil {
		db = openTestDB(e.t)
		db.Now = e.clock.Now
		store, leases, claims = db, e.redis, e.redis
	}
	reg := prometheus.NewRegistry()
	replies := Replies{TextOnly: "text only"}
	if e.replies != nil {
		replies = *e.replies
	}
	a, err := New(Options{
		Metrics: NewMetrics(reg),
		WeCom:   WeComConfig{APIBase: e.api, TokenRefreshBefore: config.Duration(5 * time.Minute)},
		Bots: []BotConfig{{Name: "helpdesk", CorpID: kfCorp, AgentID: kfAgent, Secret: kfSecret, Token: kfToken,
			EncodingAESKey: e.aesKey, KF: e.kfCfg}},
		Pipeline: PipelineConfig{LLM: e.llm, Replies: replies, Owner: owner, Lease: 3 * time.Second, Exclusive: exclusive},
		Store:    store, Leases: leases, Claims: claims, LLM: e.model, Clock: e.clock,
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.Start(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	gin.SetMode(gin.TestMode)
	engine := gin.New()
	a.Routes(engine)
	srv := httptest.NewServer(engine)
	in := &kfInstance{App: a, db: db, reg: reg, url: srv.URL + "/wecom/helpdesk/callback"}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Shutdown(ctx); err != nil {
				e.t.Errorf("shutdown of %s: %v", owner, err)
			}
			srv.Close()
		})
	}
	e.t.Cleanup(in.stop)
	e.callbacksTo(in)
	return in
}

func (e *kfEnv) callbacksTo(in *kfInstance) {
	e.sim.SetKFCallback(kfAgent, &wecomsim.Callback{URL: in.url, Token: kfToken, EncodingAESKey: e.aesKey, CorpID: kfCorp, Now: e.clock.Now})
}

func (e *kfEnv) writes(customer, text string) string {
	e.t.Helper()
	id, err := e.sim.KFCustomerWrites(e.t.Context(), kfAccount, customer, text)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// received waits for the customer to have received n messages and returns
// their texts; more than n fails.
func (e *kfEnv) received(customer string, n int) []string {
	e.t.Helper()
	eventually.True(e.t, func() bool { return len(e.sim.KFReceived(kfAccount, customer)) >= n },
		"customer %s received %d messages, want %d", customer, len(e.sim.KFReceived(kfAccount, customer)), n)
	var out []string
	for _, m := range e.sim.KFReceived(kfAccount, customer) {
		out = append(out, m.Content)
	}
	if len(out) != n {
		e.t.Fatalf("customer %s received %d messages, want %d: %q", customer, len(out), n, out)
	}
	return out
}

// settled waits until no message of the bot is pending or being answered:
// everything the service will do is done.
func (e *kfEnv) settled() {
	e.t.Helper()
	eventually.True(e.t, func() bool {
		return e.states(storage.MessageReceived, storage.MessageAnswering) == 0
	}, "the service never settled")
}

// messages returns the bot's messages in the given states, newest first.
func (e *kfEnv) messages(states ...string) []storage.MessageWithReply {
	e.t.Helper()
	ms, err := e.db.LatestMessages(e.t.Context(), storage.MessageFilter{Bot: "helpdesk", States: states})
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

// states counts the bot's messages in the given states.
func (e *kfEnv) states(states ...string) int { return len(e.messages(states...)) }

func TestKFCustomerMessageAnswered(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	inbound := e.writes(kfCustomer, "你好")
	got := e.received(kfCustomer, 1)
	if got[0] != "answer to 你好" {
		t.Errorf("customer got %q", got)
	}
	sent := e.sim.KFReceived(kfAccount, kfCustomer)[0]
	// The msgid comes from the customer's message, not from a row id
	// that another instance's database also has.
	if want := kf.OutboundMsgID("kf:"+kfAccount+":"+inbound, 0); sent.MsgID != want || sent.OnEvent {
		t.Errorf("sent %+v: want a send_msg with msgid %s", sent, want)
	}
	e.settled()
	// The conversation is the customer's on that account.
	turns, err := e.db.History(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), 5)
	if err != nil || len(turns) != 2 {
		t.Errorf("history = %+v, %v; want the question and the answer", turns, err)
	}
	if s := in.Bots()[0]; s.Kind != KindApp || s.KF == nil || len(s.KF.Accounts) != 0 {
		t.Errorf("status = %+v; want an app answering every kf account", s)
	}
	// The admin's Send reaches the customer through kf/send_msg.
	if err := in.Send(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), "来自管理员"); err != nil {
		t.Fatal(err)
	}
	if got := e.received(kfCustomer, 2); got[1] != "来自管理员" {
		t.Errorf("after the admin's send the customer got %q", got)
	}
	accts, err := in.KFAccounts(t.Context(), "helpdesk")
	if err != nil || len(accts) != 1 || accts[0].OpenKfID != kfAccount || accts[0].LastPullAt.IsZero() || accts[0].LastError != "" {
		t.Errorf("KFAccounts = %+v, %v; want the account, pulled without error", accts, err)
	}
}

// TestKFMixedPage: a page with a receptionist's text, an enter_session, a
// recall and the customer's text: only the customer's text is answered,
// everything is stored.
func TestKFMixedPage(t *testing.T) {
	e := newKFEnv(t)
	ctx := t.Context()
	// Everything is written while no callback reaches the service, then
	// one callback announces it all: one page.
	in := e.start("a", true)
	e.sim.SetKFCallback(kfAgent, nil)
	if _, err := e.sim.KFCustomerEnters(ctx, kfAccount, kfCustomer, "1", "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.KFReceptionistWrites(ctx, kfAccount, kfCustomer, "zhangsan", "人工客服在此"); err != nil {
		t.Fatal(err)
	}
	e.writes(kfCustomer, "问题")
	if _, err := e.sim.KFCustomerRecalls(ctx, kfAccount, kfCustomer, "nope"); err != nil {
		t.Fatal(err)
	}
	e.callbacksTo(in)
	if err := e.sim.KFAnnounce(ctx, kfAccount); err != nil {
		t.Fatal(err)
	}
	got := e.received(kfCustomer, 1)
	if got[0] != "answer to 问题" {
		t.Errorf("customer got %q", got)
	}
	e.settled()
	if n := e.states(storage.MessageIgnored); n != 3 {
		t.Errorf("%d messages stored as not to answer, want 3 (receptionist, enter_session, recall)", n)
	}
	if n := e.states(storage.MessageAnswered); n != 1 {
		t.Errorf("%d messages answered, want 1", n)
	}
	for origin, want := range map[string]float64{"customer": 1, "receptionist": 1, "event": 2} {
		if got, _ := tokMetric(t, in.reg, "wecombot_kf_messages_total", map[string]string{"bot": "helpdesk", "origin": origin}); got != want {
			t.Errorf("wecombot_kf_messages_total{origin=%s} = %v, want %v", origin, got, want)
		}
	}
	if got, _ := tokMetric(t, in.reg, "wecombot_kf_pulls_total", map[string]string{"bot": "helpdesk", "result": "ok"}); got < 1 {
		t.Errorf("wecombot_kf_pulls_total{result=ok} = %v", got)
	}
}

// TestKFHistoryNotAnswered: the first pull of an account returns up to 3
// days of history; it is stored, and none of it answered.
func TestKFHistoryNotAnswered(t *testing.T) {
	e := newKFEnv(t)
	e.writes("wmOLD1", "昨天的问题")
	e.writes("wmOLD2", "另一个旧问题")
	e.clock.Advance(24 * time.Hour)
	e.start("a", true)
	e.writes(kfCustomer, "新问题")
	e.received(kfCustomer, 1)
	e.settled()
	for _, c := range []string{"wmOLD1", "wmOLD2"} {
		if got := e.sim.KFReceived(kfAccount, c); len(got) != 0 {
			t.Errorf("history of %s answered: %+v", c, got)
		}
	}
	if n := e.states(storage.MessageIgnored); n != 2 {
		t.Errorf("%d history messages stored, want 2", n)
	}
}

// TestKFCursorSurvivesRestart: after a restart the pull goes on from the
// stored cursor: nothing replayed, nothing answered twice, and a message
// written while the service was down is answered.
func TestKFCursorSurvivesRestart(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	e.writes(kfCustomer, "one")
	e.received(kfCustomer, 1)
	e.settled()
	in.stop()
	e.sim.SetKFCallback(kfAgent, nil)
	e.writes(kfCustomer, "two") // nobody hears of it
	e.sim.KFNoCursorNext(1)     // and a page without next_cursor later
	e.start("b", true)
	got := e.received(kfCustomer, 2)
	if got[1] != "answer to two" {
		t.Errorf("after the restart the customer got %q", got)
	}
	e.writes(kfCustomer, "three")
	got = e.received(kfCustomer, 3)
	if got[2] != "answer to three" {
		t.Errorf("customer got %q", got)
	}
	e.settled()
	a, err := e.db.KFAccount(t.Context(), "helpdesk", kfAccount)
	if err != nil || a.Cursor == "" {
		t.Errorf("stored account = %+v, %v; want a cursor", a, err)
	}
}

// pageCrashStore commits a kf page and then fails, as a process killed
// right after the commit would leave it: messages and cursor stored, the
// pipeline never told.
type pageCrashStore struct {
	*storage.DB
	crashed atomic.Bool
}

func (s *pageCrashStore) StoreKFPage(ctx context.Context, bot, account, cursor string, msgs []storage.Message) ([]storage.Message, error) {
	if _, err := s.DB.StoreKFPage(ctx, bot, account, cursor, msgs); err != nil {
		return nil, err
	}
	if s.crashed.CompareAndSwap(false, true) {
		return nil, errors.New("killed after the commit")
	}
	return nil, nil
}

// TestKFRestartMidPull: the process dies right after a page is stored;
// the next start answers the stored messages once, and reads nothing again.
func TestKFRestartMidPull(t *testing.T) {
	e := newKFEnv(t)
	e.store = &pageCrashStore{DB: e.db}
	first := e.start("a", true)
	e.writes(kfCustomer, "one")
	eventually.True(t, func() bool { return e.states(storage.MessageReceived) == 1 }, "the page was not stored")
	first.stop()
	e.store = nil
	calls := e.sim.KFSyncCalls(kfAccount)
	e.start("b", true)
	if got := e.received(kfCustomer, 1); got[0] != "answer to one" {
		t.Errorf("after the restart the customer got %q", got)
	}
	e.settled()
	eventually.True(t, func() bool { return e.sim.KFSyncCalls(kfAccount) > calls }, "the start did not pull")
	if n := len(e.messages()); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
	e.writes(kfCustomer, "two")
	e.received(kfCustomer, 2)
}

// TestKFLostCallbackRecovered: a callback that never reached the service
// is made up for by the next one, which pulls from the stored cursor; an
// empty page with has_more=1 does not stop the pull.
func TestKFLostCallbackRecovered(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	e.sim.SetKFCallback(kfAgent, nil)
	e.writes(kfCustomer, "lost")
	e.callbacksTo(in)
	e.sim.KFEmptyPagesNext(2)
	e.writes("wmOTHER", "next")
	got := e.received(kfCustomer, 1)
	if got[0] != "answer to lost" {
		t.Errorf("customer got %q", got)
	}
	e.received("wmOTHER", 1)
	e.settled()
}

// TestKFFivePartCap: a long answer goes out in 5 parts of at most 2048
// bytes, the fifth ending with a note; the simulator refuses a sixth.
func TestKFFivePartCap(t *testing.T) {
	e := newKFEnv(t)
	long := strings.Repeat("这是一个很长的句子。", 500) // 15 000 bytes
	e.model = fakeCompleter{fn: func([]llm.Message) (string, error) { return long, nil }}
	e.start("a", true)
	e.writes(kfCustomer, "long please")
	got := e.received(kfCustomer, kf.MaxParts)
	e.settled()
	for i, p := range got {
		if len(p) > kf.MaxTextBytes || p == "" {
			t.Errorf("part %d is %d bytes", i, len(p))
		}
	}
	if !strings.HasSuffix(got[4], kfCutNote) {
		t.Errorf("the fifth part does not end with the note: …%q", got[4][max(0, len(got[4])-60):])
	}
	if n := e.states(storage.MessageAnswered); n != 1 {
		t.Errorf("%d messages answered, want 1", n)
	}
}

// TestKFHandOverNotRetried: a conversation a person took without the
// service hearing of it gets 95018: the part fails at once, with no retry,
// and the customer's next messages are left to the person.
func TestKFHandOverNotRetried(t *testing.T) {
	e := newKFEnv(t)
	e.start("a", true)
	e.writes(kfCustomer, "第一")
	e.received(kfCustomer, 1)
	e.sim.SetKFState(kfAccount, kfCustomer, wecomsim.KFStateHuman) // no event
	e.writes(kfCustomer, "还在吗")
	eventually.True(t, func() bool { return e.states(storage.MessageFailed) == 1 }, "the message did not fail")
	parts := e.messages(storage.MessageFailed)[0].Parts
	if len(parts) != 1 || parts[0].State != storage.OutboxFailed || parts[0].Attempts != 1 ||
		!strings.Contains(parts[0].LastError, "95018") {
		t.Errorf("parts = %+v; want one failed after one attempt with 95018", parts)
	}
	e.writes(kfCustomer, "人呢")
	eventually.True(t, func() bool { return e.states(storage.MessageIgnored) == 1 }, "the message after the hand-over was not left alone")
	if m := e.messages(storage.MessageIgnored)[0]; m.Error != kfHandledByPerson || len(m.Parts) != 0 {
		t.Errorf("message after the hand-over = %+v", m)
	}
	e.settled()
	if got := e.sim.KFReceived(kfAccount, kfCustomer); len(got) != 1 {
		t.Errorf("the customer of a person got %d messages, want the first answer only", len(got))
	}
}

// TestKFHandOverEndsUnseen: a conversation marked a person's by 95018
// alone (no event) comes back to the bot when WeCom says it is no longer a
// person's, though no event said so: the customer is not left unanswered
// for 48 hours. While the person has it, WeCom is asked once per page.
func TestKFHandOverEndsUnseen(t *testing.T) {
	e := newKFEnv(t)
	e.start("a", true)
	e.sim.SetKFState(kfAccount, kfCustomer, wecomsim.KFStateHuman) // no event
	e.writes(kfCustomer, "一")
	eventually.True(t, func() bool { return e.states(storage.MessageFailed) == 1 }, "the send did not fail with 95018")
	e.writes(kfCustomer, "二")
	eventually.True(t, func() bool { return e.states(storage.MessageIgnored) == 1 }, "the person's customer was answered")
	if n := e.sim.KFCalls(wecomsim.APIKFServiceState); n != 1 {
		t.Errorf("service_state/get called %d times, want once", n)
	}
	// The conversation ends where the service cannot see it; the
	// customer's next message starts a new one, the bot's.
	e.sim.SetKFState(kfAccount, kfCustomer, wecomsim.KFStateEnded)
	e.writes(kfCustomer, "三")
	if got := e.received(kfCustomer, 1); got[0] != "answer to 三" {
		t.Errorf("after the unseen end the customer got %q", got)
	}
	e.writes(kfCustomer, "四")
	e.received(kfCustomer, 2)
	if n := e.sim.KFCalls(wecomsim.APIKFServiceState); n != 2 {
		t.Errorf("service_state/get called %d times, want twice (not once the mark is gone)", n)
	}
}

// TestKFHandOverEvent: a session_status_change that gives the conversation
// to a receptionist stops the bot at once, before any send; once the
// conversation ends, the customer is answered again.
func TestKFHandOverEvent(t *testing.T) {
	e := newKFEnv(t)
	ctx := t.Context()
	e.start("a", true)
	if _, err := e.sim.KFHandOver(ctx, kfAccount, kfCustomer, "zhangsan"); err != nil {
		t.Fatal(err)
	}
	e.writes(kfCustomer, "人工")
	eventually.True(t, func() bool { return e.states(storage.MessageIgnored) == 2 }, "the message was not left to the person")
	e.settled()
	if got := e.sim.KFReceived(kfAccount, kfCustomer); len(got) != 0 || e.states(storage.MessageFailed) != 0 {
		t.Errorf("the customer of a person got %+v", got)
	}
	// The receptionist ends the conversation: the customer's next message
	// is the bot's again.
	if _, err := e.sim.KFEndSession(ctx, kfAccount, kfCustomer); err != nil {
		t.Fatal(err)
	}
	e.writes(kfCustomer, "再问")
	if got := e.received(kfCustomer, 1); got[0] != "answer to 再问" {
		t.Errorf("after the end the customer got %q", got)
	}
}

// answeredThenUndelivered has the customer ask q and get the answer, which
// WeCom then reports undelivered with failType; it returns the failed
// message.
func (e *kfEnv) answeredThenUndelivered(q string, failType int) storage.MessageWithReply {
	e.t.Helper()
	e.writes(kfCustomer, q)
	e.received(kfCustomer, 1)
	sent := e.sim.KFReceived(kfAccount, kfCustomer)
	e.settled()
	if _, err := e.sim.KFSendFails(e.t.Context(), kfAccount, kfCustomer, sent[0].MsgID, failType); err != nil {
		e.t.Fatal(err)
	}
	eventually.True(e.t, func() bool { return e.states(storage.MessageFailed) == 1 }, "the message was not failed")
	return e.messages(storage.MessageFailed)[0]
}

// TestKFSendFailEvent: a msg_send_fail for a part WeCom had accepted marks
// it and its message failed, with the fail_type explained. When the
// customer refuses messages (fail_type 10), nothing more is sent to them,
// an admin's message included, until they write again.
func TestKFSendFailEvent(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	m := e.answeredThenUndelivered("q", kf.FailRefused)
	if !strings.Contains(m.Error, "the customer refuses messages") || m.Parts[0].State != storage.OutboxFailed {
		t.Errorf("failed message = %+v", m)
	}
	calls := e.sim.KFCalls(wecomsim.APIKFSendMsg)
	if err := in.Send(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), "来自管理员"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool {
		sends, err := e.db.RecentSends(t.Context(), 10)
		return err == nil && len(sends) == 1 && sends[0].State == storage.OutboxFailed
	}, "the admin's message to a customer who refuses did not fail")
	if n := e.sim.KFCalls(wecomsim.APIKFSendMsg); n != calls {
		t.Errorf("%d sends to a customer who refuses messages", n-calls)
	}
	// They write again: they are answered.
	e.clock.Advance(time.Second)
	e.writes(kfCustomer, "又来了")
	if got := e.received(kfCustomer, 2); got[1] != "answer to 又来了" {
		t.Errorf("after writing again the customer got %q", got)
	}
	if err := in.Send(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), "管理员再发"); err != nil {
		t.Fatal(err)
	}
	if got := e.received(kfCustomer, 3); got[2] != "管理员再发" {
		t.Errorf("the admin's message after the customer wrote again: got %q", got)
	}
}

// TestKFResendAfterSendFail: the admin's re-send of a part WeCom accepted
// and then reported undelivered reaches the customer: it is not refused as
// a duplicate of the first send and counted delivered without a message.
func TestKFResendAfterSendFail(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	m := e.answeredThenUndelivered("q", kf.FailUnknown)
	if err := in.Resend(t.Context(), m.ID); err != nil {
		t.Fatal(err)
	}
	got := e.sim.KFReceived(kfAccount, kfCustomer)
	eventually.True(t, func() bool {
		got = e.sim.KFReceived(kfAccount, kfCustomer)
		return len(got) == 2
	}, "the re-send did not reach the customer: %+v", got)
	if got[1].Content != "answer to q" || got[1].MsgID == got[0].MsgID {
		t.Errorf("re-sent %+v after %+v; want the answer again under a msgid of its own", got[1], got[0])
	}
	eventually.True(t, func() bool { return e.states(storage.MessageAnswered) == 1 }, "the re-sent message is not answered")
}

// TestKFRecalled: a message the customer withdrew before the bot heard of
// it is stored, not answered.
func TestKFRecalled(t *testing.T) {
	e := newKFEnv(t)
	in := e.start("a", true)
	e.sim.SetKFCallback(kfAgent, nil)
	id := e.writes(kfCustomer, "算了")
	e.callbacksTo(in)
	if _, err := e.sim.KFCustomerRecalls(t.Context(), kfAccount, kfCustomer, id); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return e.states(storage.MessageIgnored) == 2 }, "the withdrawn message and the recall were not stored")
	e.writes(kfCustomer, "新的")
	if got := e.received(kfCustomer, 1); got[0] != "answer to 新的" {
		t.Errorf("customer got %q", got)
	}
	var withdrawn int
	for _, m := range e.messages(storage.MessageIgnored) {
		if m.Error == kfRecalled {
			withdrawn++
		}
	}
	if withdrawn != 1 {
		t.Errorf("%d messages marked withdrawn, want 1", withdrawn)
	}
}

// TestKFWelcome: enter_session with a welcome_code gets kf.welcome through
// send_msg_on_event, once, even when the event is pulled twice.
func TestKFWelcome(t *testing.T) {
	e := newKFEnv(t)
	e.kfCfg.Welcome = "欢迎光临"
	e.start("a", true)
	code, err := e.sim.KFCustomerEnters(t.Context(), kfAccount, kfCustomer, "1", "")
	if err != nil || code == "" {
		t.Fatalf("enter: code %q, %v", code, err)
	}
	eventually.True(t, func() bool { return len(e.sim.KFReceived(kfAccount, kfCustomer)) == 1 }, "no welcome")
	if err := e.sim.KFAnnounce(t.Context(), kfAccount); err != nil {
		t.Fatal(err)
	}
	e.writes(kfCustomer, "hi")
	e.received(kfCustomer, 2)
	got := e.sim.KFReceived(kfAccount, kfCustomer)
	if !got[0].OnEvent || got[0].Code != code || got[0].Content != "欢迎光临" || got[1].OnEvent {
		t.Errorf("customer got %+v; want the welcome on the event, then the answer", got)
	}
}

// crashStore loses the record of the first delivery, as a crash between
// the send and its record would.
type crashStore struct {
	*storage.DB
	lost atomic.Int32
}

func (s *crashStore) MarkSent(ctx context.Context, id int64, msgID string) error {
	if s.lost.Add(1) == 1 {
		return errors.New("crashed before the record")
	}
	return s.DB.MarkSent(ctx, id, msgID)
}

// TestKFResendAfterCrashIsDuplicate: a part sent but not recorded is sent
// again with the same msgid; WeCom refuses it as a duplicate, which counts
// as delivered: the customer gets it once.
func TestKFResendAfterCrashIsDuplicate(t *testing.T) {
	e := newKFEnv(t)
	cs := &crashStore{DB: e.db}
	e.store = cs
	e.start("a", true)
	e.writes(kfCustomer, "once")
	e.received(kfCustomer, 1)
	eventually.True(t, func() bool {
		e.clock.Advance(time.Second) // the retry of the unrecorded part
		return cs.lost.Load() >= 2 && e.states(storage.MessageAnswered) == 1
	}, "the resent part was not counted delivered")
	e.received(kfCustomer, 1)
}

// TestKFTwoInstances: two instances hear of the same news many times;
// each customer message is answered once, whether they share a database
// or have one each (and Redis).
func TestKFTwoInstances(t *testing.T) {
	t.Run("one database", func(t *testing.T) { testKFTwoInstances(t, newKFEnv(t)) })
	t.Run("a database each and Redis", func(t *testing.T) {
		e := newKFEnv(t)
		e.redis = storage.OpenRedis(redistest.Start(t).Addr)
		t.Cleanup(func() { e.redis.Close() })
		testKFTwoInstances(t, e)
	})
}

func testKFTwoInstances(t *testing.T, e *kfEnv) {
	a := e.start("a", e.redis != nil)
	b := e.start("b", e.redis != nil)
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		e.callbacksTo([]*kfInstance{a, b}[i%2])
		e.writes(kfCustomer+string(rune('A'+i)), "q")
		for _, in := range []*kfInstance{a, b} {
			k := in.kfbots["helpdesk"]
			wg.Go(func() { k.announce(kfAccount, "") })
		}
	}
	wg.Wait()
	// Done when every customer message is settled in each database and
	// the pulls are over.
	eventually.True(t, func() bool {
		e.clock.Advance(time.Second) // a puller waiting for the lease
		answered := 0
		for i, in := range []*kfInstance{a, b} {
			if in.kfbots["helpdesk"].pulling() {
				return false
			}
			if i == 1 && in.db == a.db {
				break // one database: counted once
			}
			ms, err := in.db.LatestMessages(t.Context(), storage.MessageFilter{Bot: "helpdesk"})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				switch m.State {
				case storage.MessageAnswered:
					answered++
				case storage.MessageReceived, storage.MessageAnswering:
					return false
				}
			}
		}
		return answered == n
	}, "not every customer was answered once")
	for i := range n {
		if got := e.sim.KFReceived(kfAccount, kfCustomer+string(rune('A'+i))); len(got) != 1 {
			t.Errorf("customer %d got %d answers", i, len(got))
		}
	}
}

// TestKFCallbackAckedBeforePull: the callback is answered 200 whatever the
// pull meets; a failed pull is tried again after a pause, with no news.
func TestKFCallbackAckedBeforePull(t *testing.T) {
	e := newKFEnv(t)
	e.start("a", true)
	e.sim.FailNext(wecomsim.APIKFSyncMsg, kf.CodeSystemBusy, "system busy", 1)
	e.writes(kfCustomer, "first") // writes fails unless the callback got 200
	eventually.True(t, e.lastPullFailed, "the pull did not fail")
	if got := e.sim.KFReceived(kfAccount, kfCustomer); len(got) != 0 {
		t.Fatalf("answered through a failed pull: %+v", got)
	}
	eventually.True(t, func() bool {
		e.clock.Advance(kfPullRetries[0]) // the pause before the retry
		return len(e.sim.KFReceived(kfAccount, kfCustomer)) == 1
	}, "the failed pull was not tried again")
	e.settled()
	if e.lastPullFailed() {
		t.Error("the retried pull is recorded failed")
	}
}

func (e *kfEnv) lastPullFailed() bool {
	a, err := e.db.KFAccount(e.t.Context(), "helpdesk", kfAccount)
	return err == nil && a.LastError != ""
}

// TestKFExpiredMsgToken: sync_msg refuses the callback's Token (95007, over
// 10 minutes old): the pull goes on without it.
func TestKFExpiredMsgToken(t *testing.T) {
	e := newKFEnv(t)
	e.start("a", true)
	e.sim.FailNext(wecomsim.APIKFSyncMsg, kf.CodeInvalidMsgToken, "invalid msg token", 1)
	e.writes(kfCustomer, "first")
	e.received(kfCustomer, 1)
	e.settled()
}
