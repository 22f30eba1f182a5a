package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/storage"
)

// outboxEnv is an outbox in front of the WeCom simulator, on real storage,
// driven step by step with a fake clock.
type outboxEnv struct {
	t     *testing.T
	clock *clockwork.FakeClock
	sim   *wecomsim.Server
	db    *storage.DB
	app   *App
}

func newOutboxEnv(t *testing.T) *outboxEnv {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: "wwcorp", AgentID: 1000002, Secret: "sec"}}, Now: clock.Now})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	db := openTestDB(t)
	db.Now = clock.Now
	app, err := New(Options{
		WeCom:  WeComConfig{APIBase: srv.URL, TokenRefreshBefore: config.Duration(5 * time.Minute)},
		Bots:   []BotConfig{{Name: "b", CorpID: "wwcorp", AgentID: 1000002, Secret: "sec", Token: "t", EncodingAESKey: wecomsim.NewEncodingAESKey()}},
		Outbox: OutboxConfig{GiveUpAfter: 24 * time.Hour},
		Store:  db, Clock: clock, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &outboxEnv{t: t, clock: clock, sim: sim, db: db, app: app}
}

// answer stores a message of user answered with parts.
func (e *outboxEnv) answer(user, key string, parts ...string) int64 {
	e.t.Helper()
	ctx := context.Background()
	m := &storage.Message{Bot: "b", DedupeKey: key, UserID: user, MsgType: "text", Content: "q"}
	if _, err := e.db.InsertMessage(ctx, m); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.SaveAnswer(ctx, storage.Answer{MessageID: m.ID, Bot: "b", UserID: user, Parts: parts}); err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

// drain delivers everything due at the current fake time.
func (e *outboxEnv) drain() {
	e.t.Helper()
	ctx := context.Background()
	for range 1000 {
		parts, err := e.db.DueParts(ctx, e.clock.Now(), 64)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(parts) == 0 {
			return
		}
		e.app.outbox.deliverAll(ctx, parts)
	}
	e.t.Fatal("outbox never settled")
}

func (e *outboxEnv) contents(user string) []string {
	var out []string
	for _, s := range e.sim.Delivered() {
		if s.ToUser == user {
			out = append(out, s.Content)
		}
	}
	return out
}

func (e *outboxEnv) state(id int64) storage.Message {
	m, err := e.db.GetMessage(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func TestOutboxRetriesTransientFailuresInOrder(t *testing.T) {
	e := newOutboxEnv(t)
	id := e.answer("u1", "k1", "one", "two")
	e.sim.FailNext(wecomsim.APISend, -1, "system busy", 2)
	e.drain()
	if got := e.contents("u1"); len(got) != 0 {
		t.Fatalf("delivered during the failures: %q", got)
	}
	// Backoff: nothing is retried before its time, everything after it.
	for range 20 {
		e.clock.Advance(30 * time.Second)
		e.drain()
	}
	if got := strings.Join(e.contents("u1"), ","); got != "one,two" {
		t.Fatalf("delivered %q, want one,two once each in order", got)
	}
	if m := e.state(id); m.State != storage.MessageAnswered {
		t.Fatalf("message state %q", m.State)
	}
	// The resend of a part whose first attempt failed asks WeCom to drop a copy.
	if d := e.sim.Delivered(); !d[0].DuplicateCheck || d[1].DuplicateCheck {
		t.Errorf("duplicate check on resend only: got %v, %v", d[0].DuplicateCheck, d[1].DuplicateCheck)
	}
}

func TestOutboxFailsPermanentErrorsAtOnce(t *testing.T) {
	e := newOutboxEnv(t)
	e.sim.SetInvalidUser("ghost")
	bad := e.answer("ghost", "k1", "one", "two")
	good := e.answer("alive", "k2", "hello")
	e.drain()
	m := e.state(bad)
	if m.State != storage.MessageFailed || !strings.Contains(m.Error, "81013") {
		t.Fatalf("message to an invalid user: %q %q", m.State, m.Error)
	}
	if e.state(good).State != storage.MessageAnswered || strings.Join(e.contents("alive"), "") != "hello" {
		t.Fatal("another user's answer was held up")
	}
	parts, _ := e.db.PartsOf(context.Background(), bad)
	for _, p := range parts {
		if p.State != storage.OutboxFailed {
			t.Errorf("part %d is %s, want failed", p.Seq, p.State)
		}
	}
}

func TestOutboxKeepsAUserUnderWeComsLimit(t *testing.T) {
	e := newOutboxEnv(t)
	parts := make([]string, 40)
	for i := range parts {
		parts[i] = "part " + string(rune('A'+i))
	}
	e.answer("chatty", "k1", parts...)
	other := e.answer("quiet", "k2", "hi")
	e.drain()
	if got := len(e.contents("chatty")); got != minuteBurst {
		t.Fatalf("sent %d parts at once, want the burst of %d", got, minuteBurst)
	}
	if e.state(other).State != storage.MessageAnswered {
		t.Fatal("the limit of one user held up another")
	}
	// Over any minute, never more than 30 — and everything arrives, in order.
	for range 120 {
		e.clock.Advance(time.Second)
		e.drain()
	}
	got := e.contents("chatty")
	if strings.Join(got, ",") != strings.Join(parts, ",") {
		t.Fatalf("delivered %d parts, want all 40 in order", len(got))
	}
	sent := e.sim.Delivered()
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].At.Sub(sent[i].At) < time.Minute; j++ {
			if sent[j].ToUser == "chatty" {
				n++
			}
		}
		if n > 30 {
			t.Fatalf("%d messages within a minute from %s", n, sent[i].At)
		}
	}
}

func TestOutboxGivesUpAfterTheConfiguredTime(t *testing.T) {
	e := newOutboxEnv(t)
	id := e.answer("u1", "k1", "never")
	e.sim.FailNext(wecomsim.APISend, 45009, "api freq out of limit", 1000)
	e.drain()
	for range 30 {
		e.clock.Advance(time.Hour)
		e.drain()
	}
	m := e.state(id)
	if m.State != storage.MessageFailed || !strings.Contains(m.Error, "not delivered within 24h") {
		t.Fatalf("after 30 h of failures: %q %q", m.State, m.Error)
	}
	if got := e.contents("u1"); len(got) != 0 {
		t.Fatalf("delivered %q", got)
	}
}

// During a WeCom outage (every call answered 503) nothing is lost: after
// recovery each answer arrives once, in order per user.
func TestOutboxSurvivesAWeComOutage(t *testing.T) {
	e := newOutboxEnv(t)
	want := map[string][]string{}
	for _, u := range []string{"u1", "u2", "u3"} {
		for i := range 3 {
			c := fmt.Sprintf("%s answer %d", u, i)
			e.answer(u, fmt.Sprintf("%s-%d", u, i), c+" part a", c+" part b")
			want[u] = append(want[u], c+" part a", c+" part b")
		}
	}
	e.sim.SetDown(true)
	for range 20 { // 20 minutes of outage
		e.drain()
		e.clock.Advance(time.Minute)
	}
	if n := len(e.sim.Delivered()); n != 0 {
		t.Fatalf("%d delivered during the outage", n)
	}
	e.sim.SetDown(false)
	for range 30 {
		e.clock.Advance(time.Minute)
		e.drain()
	}
	for u, w := range want {
		if got := e.contents(u); strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("%s got %q, want %q", u, got, w)
		}
	}
}

func TestAdminSendAndResendGoThroughTheOutbox(t *testing.T) {
	e := newOutboxEnv(t)
	ctx := context.Background()
	if err := e.app.Send(ctx, "nobody", "u", "x"); !errors.Is(err, ErrUnknownBot) {
		t.Fatalf("send to an unknown bot: %v", err)
	}
	if err := e.app.Send(ctx, "b", "u1", "notice from the admin"); err != nil {
		t.Fatal(err)
	}
	e.sim.SetInvalidUser("u2")
	id := e.answer("u2", "k", "lost answer")
	e.drain()
	if got := e.contents("u1"); len(got) != 1 || got[0] != "notice from the admin" {
		t.Fatalf("admin send: %q", got)
	}
	if e.state(id).State != storage.MessageFailed {
		t.Fatal("answer to an invalid user should fail")
	}
	// The user is back in the corp; the admin re-sends.
	e.sim.SetValidUser("u2")
	if err := e.app.Resend(ctx, id); err != nil {
		t.Fatal(err)
	}
	e.drain()
	if got := e.contents("u2"); len(got) != 1 || got[0] != "lost answer" || e.state(id).State != storage.MessageAnswered {
		t.Fatalf("resend: %q, state %s", got, e.state(id).State)
	}
}

// Two senders on one database (two processes, or an old and a new one during
// a restart) never send the same part twice.
func TestTwoOutboxesOnOneDatabaseSendEachPartOnce(t *testing.T) {
	e := newOutboxEnv(t)
	other, err := New(Options{
		WeCom:  WeComConfig{APIBase: e.app.bots["b"].api.base, TokenRefreshBefore: config.Duration(5 * time.Minute)},
		Bots:   []BotConfig{e.app.bots["b"].cfg},
		Outbox: OutboxConfig{GiveUpAfter: 24 * time.Hour},
		Store:  e.db, Clock: e.clock, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		c := fmt.Sprintf("part %d", i)
		e.answer(fmt.Sprintf("user%d", i%5), fmt.Sprintf("k%d", i), c)
		want = append(want, c)
	}
	ctx := context.Background()
	for range 10 {
		parts, err := e.db.DueParts(ctx, e.clock.Now(), 64)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { other.outbox.deliverAll(ctx, parts); close(done) }()
		e.app.outbox.deliverAll(ctx, parts)
		<-done
	}
	count := map[string]int{}
	for _, s := range e.sim.Delivered() {
		count[s.Content]++
	}
	for _, c := range want {
		if count[c] != 1 {
			t.Errorf("%q delivered %d times", c, count[c])
		}
	}
}
