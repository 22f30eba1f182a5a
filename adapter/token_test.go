package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work/config"
	workctx "github.com/silenceper/wechat/v2/work/context"
	"github.com/silenceper/wechat/v2/work/message"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/storage"
)

// The token tests run a TokenManager against the WeCom simulator behind a
// real HTTP server, on real SQLite, with a fake clock that both share: no
// test sleeps through an expiry, the clock is advanced instead.

const (
	tokBot     = "helpdesk"
	tokCorpID  = "wwc0ffee0123456789"
	tokAgentID = int64(1000002)
	tokSecret  = "kZ8qT1vR7wN2pL5xC9mB4hJ6dF3gS0aEyU7iO2e"
	tokRefresh = 5 * time.Minute
	tokLife    = 7200 * time.Second
)

var tokApp = wecomsim.App{CorpID: tokCorpID, AgentID: tokAgentID, Secret: tokSecret}

// tokLog is a slog destination the test reads while managers write to it.
type tokLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	hold map[string]*tokHold // message → the next record with it waits
}

// holdOn makes the next record with message wait, in the goroutine that
// logs it, until released: a manager logging after a step is caught just
// after that step.
func (l *tokLog) holdOn(message string) (arrived <-chan struct{}, release func()) {
	h := &tokHold{arrived: make(chan struct{}), release: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold == nil {
		l.hold = map[string]*tokHold{}
	}
	l.hold[message] = h
	return h.arrived, sync.OnceFunc(func() { close(h.release) })
}

// tokHoldHandler holds records for tokLog.holdOn before the text handler
// (and its lock, which every record shares) sees them.
type tokHoldHandler struct {
	slog.Handler
	l *tokLog
}

func (h tokHoldHandler) Handle(ctx context.Context, r slog.Record) error {
	h.l.mu.Lock()
	hold := h.l.hold[r.Message]
	delete(h.l.hold, r.Message)
	h.l.mu.Unlock()
	if hold != nil {
		close(hold.arrived)
		<-hold.release
	}
	return h.Handler.Handle(ctx, r)
}

func (h tokHoldHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return tokHoldHandler{h.Handler.WithAttrs(as), h.l}
}

func (h tokHoldHandler) WithGroup(name string) slog.Handler {
	return tokHoldHandler{h.Handler.WithGroup(name), h.l}
}

func (l *tokLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *tokLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *tokLog) count(substr string) int { return strings.Count(l.String(), substr) }

func (l *tokLog) logger() *slog.Logger {
	return slog.New(tokHoldHandler{slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}), l})
}

// tokSend is one message/send request as it reached the simulator.
type tokSend struct {
	token string
	body  []byte
}

// tokEnv is one test's WeCom: the simulator, its HTTP server and the clock.
type tokEnv struct {
	fake    *clockwork.FakeClock
	sim     *wecomsim.Server
	srv     *httptest.Server
	api     *apiClient
	reg     *prometheus.Registry
	metrics *Metrics
	log     *tokLog
	dir     string
	dbs     atomic.Int64

	advancing  sync.RWMutex // see tokClock
	afterFuncs *afterFuncs  // see tokClock.AfterFunc

	mu    sync.Mutex
	sends []tokSend
	holds map[string]*tokHold
}

// tokHold keeps one message/send whose body contains a text from the
// simulator until released, to order it after other calls.
type tokHold struct {
	arrived, release chan struct{}
}

// holdSend holds the next message/send whose body contains text. arrived
// closes when it reached the server; release lets it go on.
func (e *tokEnv) holdSend(text string) (arrived <-chan struct{}, release func()) {
	h := &tokHold{arrived: make(chan struct{}), release: make(chan struct{})}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.holds == nil {
		e.holds = map[string]*tokHold{}
	}
	e.holds[text] = h
	return h.arrived, sync.OnceFunc(func() { close(h.release) })
}

func newTokEnv(t testing.TB, opts wecomsim.Options) *tokEnv {
	t.Helper()
	// Start near the real time: Redis's key TTLs and StoreShared compare
	// token expiries with it.
	fake := clockwork.NewFakeClockAt(time.Now())
	if opts.Apps == nil {
		opts.Apps = []wecomsim.App{tokApp}
	}
	opts.Now = fake.Now
	e := &tokEnv{fake: fake, sim: wecomsim.New(opts), reg: prometheus.NewRegistry(), log: &tokLog{}, dir: t.TempDir(), afterFuncs: &afterFuncs{}}
	e.metrics = NewMetrics(e.reg)
	h := e.sim.Handler()
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/cgi-bin/message/send") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.sends = append(e.sends, tokSend{token: r.URL.Query().Get("access_token"), body: body})
			var hold *tokHold
			for text, h := range e.holds {
				if bytes.Contains(body, []byte(text)) {
					hold = h
					delete(e.holds, text)
					break
				}
			}
			e.mu.Unlock()
			if hold != nil {
				close(hold.arrived)
				select {
				case <-hold.release:
				case <-r.Context().Done():
					return
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	e.api = newAPIClient(e.srv.URL, 5*time.Second)
	return e
}

func (e *tokEnv) sent() []tokSend {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]tokSend(nil), e.sends...)
}

// openDB opens the SQLite file name in the test's folder. Several handles
// on one name are one database, as for a process that restarts.
func (e *tokEnv) openDB(t testing.TB, name string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), storage.Config{Driver: "sqlite", DSN: filepath.Join(e.dir, name)})
	if err != nil {
		t.Fatal(err)
	}
	db.Now = e.fake.Now
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// tokClock is a manager's view of the test's fake clock. Its timers start
// from the time the manager last read, as a real clock's effectively do: the
// refresh loop reads the time, works out the wait and arms a timer, and a
// test that advanced the fake clock in between (its goroutine may run many
// steps while the loop waits to be scheduled) would otherwise make the
// timer fire late. Arming excludes advancing (tokEnv.advance).
type tokClock struct {
	*clockwork.FakeClock
	advancing *sync.RWMutex
	funcs     *afterFuncs
	mu        sync.Mutex
	last      time.Time
}

func (c *tokClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = c.FakeClock.Now()
	return c.last
}

func (c *tokClock) NewTimer(d time.Duration) clockwork.Timer {
	c.mu.Lock()
	base := c.last
	c.mu.Unlock()
	c.advancing.RLock()
	defer c.advancing.RUnlock()
	return c.FakeClock.NewTimer(base.Add(d).Sub(c.FakeClock.Now()))
}

// advance moves the fake clock; see tokClock. The AfterFunc callbacks that
// came due have run when it returns.
func (e *tokEnv) advance(d time.Duration) {
	e.advancing.Lock()
	defer e.advancing.Unlock()
	e.fake.Advance(d)
	e.afterFuncs.run(e.fake.Now())
}

// AfterFunc runs f synchronously in the test's advance (clockwork runs it in
// a goroutine of its own), so that a token lapses exactly when the test
// moves past its usable time, not some scheduling moments later.
func (c *tokClock) AfterFunc(d time.Duration, f func()) clockwork.Timer {
	c.mu.Lock()
	base := c.last
	c.mu.Unlock()
	return c.funcs.add(base.Add(d), f)
}

// afterFuncs are the pending AfterFunc callbacks of a test's managers.
type afterFuncs struct {
	mu      sync.Mutex
	pending []*afterFunc
}

type afterFunc struct {
	list    *afterFuncs
	at      time.Time
	f       func()
	stopped bool
}

func (a *afterFuncs) add(at time.Time, f func()) *afterFunc {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := &afterFunc{list: a, at: at, f: f}
	a.pending = append(a.pending, t)
	return t
}

func (a *afterFuncs) run(now time.Time) {
	a.mu.Lock()
	var due []*afterFunc
	keep := a.pending[:0]
	for _, t := range a.pending {
		switch {
		case t.stopped:
		case !now.Before(t.at):
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	a.pending = keep
	a.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func (t *afterFunc) Chan() <-chan time.Time { return nil }

func (t *afterFunc) Stop() bool {
	t.list.mu.Lock()
	defer t.list.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (t *afterFunc) Reset(time.Duration) bool {
	panic("afterFunc.Reset is not used by the token manager")
}

type tokManagerOptions struct {
	Secret string       // default tokSecret
	DB     *storage.DB  // default: a database of its own
	Shared SharedTokens // default: none
	Log    *tokLog      // default: the env's
	API    *apiClient   // default: the simulator's
}

func (e *tokEnv) manager(t testing.TB, o tokManagerOptions) *TokenManager {
	t.Helper()
	if o.Secret == "" {
		o.Secret = tokSecret
	}
	if o.DB == nil {
		o.DB = e.openDB(t, fmt.Sprintf("instance%d.db", e.dbs.Add(1)))
	}
	if o.Log == nil {
		o.Log = e.log
	}
	if o.API == nil {
		o.API = e.api
	}
	return newTokenManager(TokenManagerOptions{
		Bot:           BotConfig{Name: tokBot, CorpID: tokCorpID, AgentID: tokAgentID, Secret: o.Secret},
		RefreshBefore: tokRefresh, API: o.API, Store: o.DB, Shared: o.Shared,
		Clock: &tokClock{FakeClock: e.fake, advancing: &e.advancing, funcs: e.afterFuncs, last: e.fake.Now()},
		Log:   o.Log.logger(), Metrics: e.metrics,
	})
}

// runTok runs tm's background loop until the test ends.
func runTok(t testing.TB, tm *TokenManager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		// A refresh in flight outlives Run's ctx by design: let it end
		// before the database closes.
		_, _, _ = tm.sf.Do("token", func() (any, error) { return nil, nil })
	})
}

// send delivers content to user the way the service does.
func (e *tokEnv) send(ctx context.Context, tm *TokenManager, user, content string) error {
	b := &bot{cfg: BotConfig{Name: tokBot, CorpID: tokCorpID, AgentID: tokAgentID}, tokens: tm, api: e.api}
	_, err := b.sendText(ctx, user, content, 0)
	return err
}

// tokEventually polls cond for a short real-time while: background loops
// work in real time even though the clock they read is fake.
func tokEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settled reports whether tm holds a usable token whose refresh is not due.
func (e *tokEnv) settled(tm *TokenManager) bool {
	s := tm.cur.Load()
	return s != nil && !s.usableUntil.IsZero() && e.fake.Now().Before(s.refreshAt)
}

// settle waits until every manager's loop has done what fell due.
func (e *tokEnv) settle(t testing.TB, tms ...*TokenManager) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < len(tms); {
		if e.settled(tms[i]) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			now := e.fake.Now()
			msg := fmt.Sprintf("manager %d of %d did not settle at %s:", i, len(tms), now)
			if s := tms[i].cur.Load(); s != nil {
				msg += fmt.Sprintf(" fetched %s, refresh in %s, usable for %s, expires in %s (%s);",
					s.fetchedAt, s.refreshAt.Sub(now), s.usableUntil.Sub(now), s.expiresAt.Sub(now), s.source)
			}
			t.Fatalf("%s status %+v; gettoken calls %d\n%s", msg, tms[i].Status(), e.sim.TotalTokenFetches(), e.log)
		}
		time.Sleep(time.Millisecond)
	}
}

// idle lets d pass without traffic, in steps, letting the loops do what
// falls due at each step. each, if set, runs after every step.
func (e *tokEnv) idle(t testing.TB, d, step time.Duration, each func(), tms ...*TokenManager) {
	t.Helper()
	for passed := time.Duration(0); passed < d; passed += step {
		e.advance(min(step, d-passed))
		e.settle(t, tms...)
		if each != nil {
			each()
		}
	}
}

// runningTokEnv is an env of opts with one manager whose loop runs until
// the test ends and has fetched the first token by itself.
func runningTokEnv(t testing.TB, opts wecomsim.Options) (*tokEnv, *TokenManager) {
	t.Helper()
	e := newTokEnv(t, opts)
	tm := e.manager(t, tokManagerOptions{})
	runTok(t, tm)
	e.settle(t, tm)
	return e, tm
}

// revokedTokEnv is an env with one manager holding a token, old, that
// WeCom has just revoked.
func revokedTokEnv(t testing.TB) (e *tokEnv, tm *TokenManager, old string) {
	t.Helper()
	e = newTokEnv(t, wecomsim.Options{})
	tm = e.manager(t, tokManagerOptions{})
	old = mustGet(t, tm)
	e.sim.RevokeTokens()
	return e, tm, old
}

func mustGet(t testing.TB, tm *TokenManager) string {
	t.Helper()
	tok, err := tm.Get(context.Background())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return tok
}

func TestTokenColdBurstFetchesOnce(t *testing.T) {
	t.Parallel()
	e := newTokEnv(t, wecomsim.Options{})
	// A gettoken as slow as WeCom's from far away keeps the burst waiting on it.
	e.sim.SetLatency(20 * time.Millisecond)
	tm := e.manager(t, tokManagerOptions{})

	const n = 1000
	start := make(chan struct{})
	tokens := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = tm.Get(context.Background())
		})
	}
	close(start)
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("Get %d returned another token than Get 0", i)
		}
	}
	if got := e.sim.TotalTokenFetches(); got != 1 {
		t.Errorf("gettoken calls = %d, want 1", got)
	}
	if tokens[0] != e.sim.CurrentToken(tokAgentID) {
		t.Error("the token is not the one WeCom issued")
	}
}

func TestTokenIdlePastExpiry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		lifetime time.Duration
		idle     time.Duration
		step     time.Duration
		refreshs int
		// refreshed checks when the token prev was replaced.
		refreshed func(t *testing.T, prev, next TokenStatus, step time.Duration)
	}{{
		name: "7200s", lifetime: tokLife, idle: 3*tokLife + 10*time.Minute, step: 20 * time.Second, refreshs: 3,
		refreshed: func(t *testing.T, prev, next TokenStatus, step time.Duration) {
			// At expires_at - refresh_before, less up to 30 s of jitter.
			earliest := prev.ExpiresAt.Add(-tokRefresh - 30*time.Second)
			latest := prev.ExpiresAt.Add(-tokRefresh + step)
			if next.FetchedAt.Before(earliest) || next.FetchedAt.After(latest) {
				t.Errorf("refreshed %s before expiry, want %s..%s", prev.ExpiresAt.Sub(next.FetchedAt),
					tokRefresh-step, tokRefresh+30*time.Second)
			}
		},
	}, {
		name: "lifetime shorter than refresh_before", lifetime: 2 * time.Minute, idle: 6*time.Minute + 30*time.Second,
		step: 5 * time.Second, refreshs: 6,
		refreshed: func(t *testing.T, prev, next TokenStatus, step time.Duration) {
			// At half the lifetime.
			if d := next.FetchedAt.Sub(prev.FetchedAt); d < time.Minute || d >= time.Minute+step {
				t.Errorf("refreshed %s after the fetch, want half the lifetime (1m)", d)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, tm := runningTokEnv(t, wecomsim.Options{TokenLifetime: tc.lifetime})
			// The token's times without a clock read (see tokClock).
			held := func() TokenStatus {
				s := tm.cur.Load()
				return TokenStatus{ExpiresAt: s.expiresAt, FetchedAt: s.fetchedAt}
			}
			refreshs := 0
			prev := held()
			e.idle(t, tc.idle, tc.step, func() {
				st := held()
				if st.FetchedAt.Equal(prev.FetchedAt) {
					return
				}
				refreshs++
				tc.refreshed(t, prev, st, tc.step)
				prev = st
			}, tm)

			if refreshs != tc.refreshs {
				t.Errorf("%d proactive refreshes, want %d", refreshs, tc.refreshs)
			}
			if got, want := e.sim.TotalTokenFetches(), 1+tc.refreshs; got != want {
				t.Errorf("gettoken calls = %d, want %d (one per lifetime)", got, want)
			}
			if err := e.send(context.Background(), tm, "alice", "after the idle hours"); err != nil {
				t.Fatalf("send after idling: %v", err)
			}
			if r := e.sim.Rejected(); len(r) != 0 {
				t.Errorf("WeCom rejected calls: %v", r)
			}
			if got := e.sim.TotalTokenFetches(); got != 1+tc.refreshs {
				t.Errorf("the send cost a gettoken call (%d calls)", got)
			}
		})
	}
}

func TestTokenSameTokenOnRefetch(t *testing.T) {
	t.Parallel()
	e, tm := runningTokEnv(t, wecomsim.Options{SameTokenWhileValid: true})
	first := tm.Status()
	tokA := mustGet(t, tm)

	// Up to just before the expiry: one proactive refetch, answered with
	// the same token and a fresh expires_in.
	e.idle(t, tokLife-20*time.Second, 20*time.Second, nil, tm)
	if got := e.sim.TokenFetches(tokAgentID); got != 2 {
		t.Fatalf("gettoken calls = %d before the expiry, want 2 (first + one refresh, then none until expiry)", got)
	}
	if st := tm.Status(); !st.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatalf("expires_at moved from %s to %s: a repeat answer extended the known expiry",
			first.ExpiresAt, st.ExpiresAt)
	}
	if got := mustGet(t, tm); got != tokA {
		t.Fatal("the token changed although WeCom handed back the same one")
	}
	if err := e.send(context.Background(), tm, "alice", "just before the expiry"); err != nil {
		t.Fatalf("send before the expiry: %v", err)
	}

	// Across the real expiry: the next try is at that expiry, and gets a
	// new token.
	e.idle(t, 40*time.Second, 20*time.Second, nil, tm)
	if got := e.sim.TokenFetches(tokAgentID); got != 3 {
		t.Fatalf("gettoken calls = %d after the expiry, want 3", got)
	}
	st := tm.Status()
	if !st.FetchedAt.Equal(first.ExpiresAt) {
		t.Errorf("new token fetched at %s, want at the old one's expiry %s", st.FetchedAt, first.ExpiresAt)
	}
	if mustGet(t, tm) == tokA {
		t.Fatal("still the expired token")
	}
	if err := e.send(context.Background(), tm, "alice", "after the expiry"); err != nil {
		t.Fatalf("send after the expiry: %v", err)
	}
	if r := e.sim.Rejected(); len(r) != 0 {
		t.Errorf("WeCom rejected calls: %v", r)
	}
}

func TestTokenRefusedMidFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("one send", func(t *testing.T) {
		t.Parallel()
		e, tm, old := revokedTokEnv(t)

		if err := e.send(ctx, tm, "alice", "hello after a revoke"); err != nil {
			t.Fatalf("send: %v", err)
		}
		if got := e.sim.TotalTokenFetches(); got != 2 {
			t.Errorf("gettoken calls = %d, want 2 (one refetch)", got)
		}
		if r := e.sim.Rejected(); len(r) != 1 || r[codeInvalidToken] != 1 {
			t.Errorf("rejected = %v, want one 40014", r)
		}
		sends := e.sent()
		if len(sends) != 2 {
			t.Fatalf("%d message/send calls, want 2 (refused, retried)", len(sends))
		}
		if sends[0].token != old || sends[1].token == old || sends[1].token != e.sim.CurrentToken(tokAgentID) {
			t.Error("the retry did not use the new token")
		}
		if !bytes.Equal(sends[0].body, sends[1].body) {
			t.Errorf("the retry sent another body:\n%s\n%s", sends[0].body, sends[1].body)
		}
		d := e.sim.Delivered()
		if len(d) != 1 || d[0].ToUser != "alice" || d[0].Content != "hello after a revoke" || d[0].AgentID != tokAgentID {
			t.Errorf("delivered = %+v", d)
		}
	})

	t.Run("refusal arriving after the refetch", func(t *testing.T) {
		t.Parallel()
		e, tm, _ := revokedTokEnv(t)

		// A send with the old token is held on its way to WeCom while
		// another is refused, refetches and succeeds.
		arrived, release := e.holdSend("slow part")
		t.Cleanup(release)
		slow := make(chan error, 1)
		go func() { slow <- e.send(ctx, tm, "alice", "slow part") }()
		<-arrived
		if err := e.send(ctx, tm, "alice", "fast part"); err != nil {
			t.Fatalf("fast send: %v", err)
		}
		// The late refusal of the old token must not drop the new one.
		release()
		if err := <-slow; err != nil {
			t.Fatalf("slow send: %v", err)
		}
		if got := e.sim.TotalTokenFetches(); got != 2 {
			t.Errorf("gettoken calls = %d, want 2: the late refusal dropped the new token", got)
		}
		if r := e.sim.Rejected(); r[codeInvalidToken] != 2 || len(r) != 1 {
			t.Errorf("rejected = %v, want two 40014 (both sends' first try)", r)
		}
		if d := e.sim.Delivered(); len(d) != 2 {
			t.Errorf("delivered %d, want 2", len(d))
		}
	})

	t.Run("refusal of the token a flight just installed", func(t *testing.T) {
		t.Parallel()
		e := newTokEnv(t, wecomsim.Options{})
		log := &tokLog{}
		tm := e.manager(t, tokManagerOptions{Log: log})

		// A flight installs the token and, before it ends, WeCom revokes
		// it and a send with it is refused: the send's refetch must not
		// take the revoked token from that flight.
		installed, release := log.holdOn("access token obtained")
		t.Cleanup(release)
		first := make(chan error, 1)
		go func() { _, err := tm.Get(ctx); first <- err }()
		<-installed
		e.sim.RevokeTokens()
		sent := make(chan error, 1)
		go func() { sent <- e.send(ctx, tm, "alice", "fresh token refused") }()
		tokEventually(t, "the refusal", func() bool { return e.sim.Rejected()[codeInvalidToken] == 1 })
		time.Sleep(20 * time.Millisecond) // for the send to join the open flight
		release()
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("send: %v", err)
		}
		if got := e.sim.TotalTokenFetches(); got != 2 {
			t.Errorf("gettoken calls = %d, want 2", got)
		}
		if r := e.sim.Rejected(); r[codeInvalidToken] != 1 {
			t.Errorf("rejected = %v, want one 40014: the retry used the refused token", r)
		}
	})

	t.Run("burst of 50", func(t *testing.T) {
		t.Parallel()
		e, tm, _ := revokedTokEnv(t)

		const n = 50
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = e.send(ctx, tm, "bob", fmt.Sprintf("part %d", i))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		}
		if got := e.sim.TotalTokenFetches(); got != 2 {
			t.Errorf("gettoken calls = %d, want 2: the burst of refusals cost more than one refetch", got)
		}
		got := map[string]bool{}
		for _, m := range e.sim.Delivered() {
			got[m.Content] = true
		}
		if len(got) != n {
			t.Errorf("%d of %d parts delivered", len(got), n)
		}
		if r := e.sim.Rejected(); r[codeInvalidToken] < 1 || len(r) != 1 {
			t.Errorf("rejected = %v, want only 40014s", r)
		}
	})
}

func TestTokenGettokenOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("lasting past the expiry", func(t *testing.T) {
		t.Parallel()
		e, tm := runningTokEnv(t, wecomsim.Options{})
		first := tm.Status()
		tok := mustGet(t, tm)
		e.sim.FailNext(wecomsim.APIGetToken, codeSystemBusy, "system busy", 1<<20)

		// Idle to the refresh point: the refresh fails.
		for e.settled(tm) {
			e.advance(20 * time.Second)
		}
		tokEventually(t, "a failed refresh", func() bool { return tm.Status().LastError != "" })

		// Up to the token's real end (less the skew), sends go on with it.
		usable := first.ExpiresAt.Add(-30 * time.Second)
		sends := 0
		for e.fake.Now().Add(time.Minute).Before(usable) {
			e.advance(time.Minute)
			if err := e.send(ctx, tm, "alice", fmt.Sprintf("during the outage %d", sends)); err != nil {
				t.Fatalf("send during the outage at %s before expiry: %v", first.ExpiresAt.Sub(e.fake.Now()), err)
			}
			sends++
		}
		if sends < 4 {
			t.Fatalf("only %d sends during the outage", sends)
		}
		st := tm.Status()
		if !strings.Contains(st.LastError, "errcode -1") || st.State != TokenValid && st.State != TokenRefreshing {
			t.Errorf("status = %+v, want the last error and a valid token", st)
		}
		if !st.ExpiresAt.Equal(first.ExpiresAt) || mustGet(t, tm) != tok {
			t.Error("the failed refresh discarded or changed the valid token")
		}
		for _, s := range e.sent() {
			if s.token != tok {
				t.Fatal("a send used another token than the valid one")
			}
		}
		if got := e.sim.TotalTokenFetches(); got > 1+12 {
			t.Errorf("%d gettoken calls in a 5-minute outage: the retries do not back off", got)
		}

		// Past the real expiry the dead token is never used.
		e.advance(time.Minute)
		if err := e.send(ctx, tm, "alice", "after the expiry"); !errors.Is(err, ErrNoToken) {
			t.Errorf("send after the expiry = %v, want ErrNoToken", err)
		}
		if r := e.sim.Rejected(); r[codeTokenExpired] != 0 || r[codeInvalidToken] != 0 {
			t.Errorf("a dead token reached WeCom: rejected = %v", r)
		}
		if len(e.sim.Delivered()) != sends {
			t.Errorf("delivered %d, want %d", len(e.sim.Delivered()), sends)
		}
	})

	t.Run("ending before the expiry", func(t *testing.T) {
		t.Parallel()
		e, tm := runningTokEnv(t, wecomsim.Options{})
		first := tm.Status()
		const failures = 5
		e.sim.FailNext(wecomsim.APIGetToken, codeRateLimited, "api freq out of limit", failures)

		// Step by 10 s: the loop retries with backoff until WeCom answers
		// again, and the token never lapses meanwhile.
		for e.fake.Now().Before(first.ExpiresAt) && tm.Status().FetchedAt.Equal(first.FetchedAt) {
			e.advance(10 * time.Second)
			// A due timer left the clock's waiters: the loop is back
			// on its next timer once its attempt is over.
			if err := e.fake.BlockUntilContext(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			if err := e.send(ctx, tm, "alice", "while retrying "+e.fake.Now().String()); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		e.settle(t, tm)
		st := tm.Status()
		if !st.FetchedAt.Before(first.ExpiresAt.Add(-30*time.Second)) || st.LastError != "" || st.State != TokenValid {
			t.Errorf("status after the outage = %+v, want a new token fetched before the old one lapsed", st)
		}
		if got := e.sim.TotalTokenFetches(); got != 1+failures+1 {
			t.Errorf("gettoken calls = %d, want %d", got, 1+failures+1)
		}
		if r := e.sim.Rejected(); len(r) != 1 || r[codeRateLimited] != failures {
			t.Errorf("rejected = %v, want only the injected gettoken failures", r)
		}
	})
}

func TestTokenConfigErrorsDoNotLoop(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		secret string
		inject func(*wecomsim.Server)
		code   string
		hint   string
	}{{
		name: "40001 bad secret", secret: "Wq4nX8cV2bM6zL1kJ5hG9fD3sA7pO0iUyT8rE1w",
		code: "errcode 40001", hint: "secret is wrong",
	}, {
		name: "60020 IP not trusted",
		inject: func(s *wecomsim.Server) {
			s.FailNext(wecomsim.APIGetToken, codeIPNotTrusted, "not allow to access from your ip, hint: [1712345678_11_abcdef], from ip: 1.2.3.4, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 1<<20)
		},
		code: "errcode 60020", hint: "1.2.3.4",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTokEnv(t, wecomsim.Options{})
			if tc.inject != nil {
				tc.inject(e.sim)
			}
			tm := e.manager(t, tokManagerOptions{Secret: tc.secret})

			gets := func() {
				t.Helper()
				var wg sync.WaitGroup
				for range 100 {
					wg.Go(func() {
						if _, err := tm.Get(context.Background()); !errors.Is(err, ErrNoToken) {
							t.Errorf("Get = %v, want ErrNoToken", err)
						}
					})
				}
				wg.Wait()
			}
			gets()
			if got := e.sim.TotalTokenFetches(); got != 1 {
				t.Fatalf("100 Gets made %d gettoken calls, want 1", got)
			}
			st := tm.Status()
			if st.State != TokenError || !strings.Contains(st.LastError, tc.code) || !strings.Contains(st.Hint, tc.hint) {
				t.Fatalf("status = %+v, want state error, %q and a hint with %q", st, tc.code, tc.hint)
			}

			// The loop waits out the long backoff (1 min, then doubling).
			runTok(t, tm)
			calls := 1
			for _, backoff := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
				if err := e.fake.BlockUntilContext(t.Context(), 1); err != nil {
					t.Fatal(err)
				}
				e.advance(backoff - time.Second)
				gets()
				time.Sleep(20 * time.Millisecond) // give a wrongly woken loop the time to call
				if got := e.sim.TotalTokenFetches(); got != calls {
					t.Fatalf("gettoken called %d times within the %s backoff, want %d", got, backoff, calls)
				}
				e.advance(2 * time.Second)
				calls++
				tokEventually(t, "the retry after the backoff", func() bool { return e.sim.TotalTokenFetches() == calls })
			}
			gets()
			time.Sleep(20 * time.Millisecond)
			if got := e.sim.TotalTokenFetches(); got != calls {
				t.Fatalf("gettoken calls = %d, want %d", got, calls)
			}
		})
	}
}

func TestTokenSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newTokEnv(t, wecomsim.Options{})
	a := e.manager(t, tokManagerOptions{DB: e.openDB(t, "wecombot.db")})
	tok := mustGet(t, a)

	// kill -9: A's database is never closed; B opens the same file.
	b := e.manager(t, tokManagerOptions{DB: e.openDB(t, "wecombot.db")})
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, b); got != tok {
		t.Error("the restarted manager does not serve the persisted token")
	}
	if st := b.Status(); st.Source != SourceDatabase || st.State != TokenValid {
		t.Errorf("status after restart = %+v", st)
	}
	if err := e.send(ctx, b, "alice", "after the restart"); err != nil {
		t.Fatal(err)
	}
	if got := e.sim.TotalTokenFetches(); got != 1 {
		t.Errorf("gettoken calls = %d, want 1: the restart fetched again", got)
	}

	// A restart after the persisted token expired must not use it.
	e.advance(tokLife)
	c := e.manager(t, tokManagerOptions{DB: e.openDB(t, "wecombot.db")})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.State == TokenValid {
		t.Errorf("an expired persisted token was adopted: %+v", st)
	}
	if err := e.send(ctx, c, "alice", "after an expired restart"); err != nil {
		t.Fatal(err)
	}
	if got := e.sim.TotalTokenFetches(); got != 2 {
		t.Errorf("gettoken calls = %d, want 2", got)
	}
	if mustGet(t, c) == tok {
		t.Error("the expired token is still served")
	}
	if r := e.sim.Rejected(); len(r) != 0 {
		t.Errorf("rejected = %v", r)
	}
}

func TestTokenSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const wrongSecret = "Wq4nX8cV2bM6zL1kJ5hG9fD3sA7pO0iUyT8rE1w"
	e := newTokEnv(t, wecomsim.Options{})
	var seen []string // every token value WeCom issued
	issued := func() {
		if v := e.sim.CurrentToken(tokAgentID); v != "" {
			seen = append(seen, v)
		}
	}
	var errs []error

	// Success, refusal and healing, outage of message/send.
	tm := e.manager(t, tokManagerOptions{})
	runTok(t, tm)
	e.settle(t, tm)
	issued()
	e.sim.RevokeTokens()
	errs = append(errs, e.send(ctx, tm, "alice", "after a revoke"))
	issued()
	e.sim.FailNext(wecomsim.APISend, codeTokenExpired, "access_token expired", 1)
	errs = append(errs, e.send(ctx, tm, "alice", "after a 42001"))
	issued()
	// gettoken failures: transient, then a refresh after which sends fail.
	e.sim.FailNext(wecomsim.APIGetToken, codeTooConcurrent, "api concurrent out of limit", 1)
	errs = append(errs, tm.Refresh(ctx))
	e.sim.SetDown(true)
	errs = append(errs, e.send(ctx, tm, "alice", "during an outage"), tm.Refresh(ctx))
	e.sim.SetDown(false)
	// Configuration errors.
	bad := e.manager(t, tokManagerOptions{Secret: wrongSecret})
	_, err := bad.Get(ctx)
	errs = append(errs, err)
	e.sim.FailNext(wecomsim.APIGetToken, codeIPNotTrusted, "not allow to access from your ip, hint: [1], from ip: 1.2.3.4, more info at x", 1)
	errs = append(errs, tm.Refresh(ctx))
	// A network error: Go's *url.Error carries the whole URL, corpsecret included.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	offline := e.manager(t, tokManagerOptions{API: newAPIClient(gone.URL, time.Second)})
	_, err = offline.Get(ctx)
	errs = append(errs, err)

	logs := e.log.String()
	for _, want := range []string{"cannot obtain access token", "errcode 40001", "errcode 60020", "connection refused", "WeCom refused the access token"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q: the failure cases did not run\n%s", want, logs)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("only %d tokens issued; errors: %v\n%s", len(seen), errs, logs)
	}
	var shown []string
	for _, err := range errs {
		if err != nil {
			shown = append(shown, err.Error())
		}
	}
	for _, tm := range []*TokenManager{tm, bad, offline} {
		st := tm.Status()
		shown = append(shown, st.LastError, st.Hint)
	}
	for _, secret := range append([]string{tokSecret, wrongSecret}, seen...) {
		if tokLeaks(logs, secret) {
			t.Errorf("the log contains (part of) a secret or token %.8s…:\n%s", secret, logs)
		}
		for _, s := range shown {
			if tokLeaks(s, secret) {
				t.Errorf("an error or status contains (part of) a secret or token %.8s…: %s", secret, s)
			}
		}
	}
}

// tokLeaks reports whether text holds any 12 consecutive bytes of secret:
// a truncated token in a log line is a leak too.
func tokLeaks(text, secret string) bool {
	const window = 12
	for i := 0; i+window <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+window]) {
			return true
		}
	}
	return false
}

// This test sets silenceper's package-global URI modifier: it must not run
// in parallel.
func TestTokenSilenceperHandle(t *testing.T) {
	e := newTokEnv(t, wecomsim.Options{})
	tm := e.manager(t, tokManagerOptions{})
	var h credential.AccessTokenContextHandle = tm

	tok := mustGet(t, tm)
	if got, err := h.GetAccessTokenContext(context.Background()); err != nil || got != tok {
		t.Fatalf("GetAccessTokenContext = %.8s…, %v", got, err)
	}
	if got, err := h.GetAccessToken(); err != nil || got != tok {
		t.Fatalf("GetAccessToken = %.8s…, %v", got, err)
	}

	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://qyapi.weixin.qq.com", e.srv.URL, 1)
	})
	t.Cleanup(func() { util.SetURIModifier(nil) })
	client := message.NewClient(&workctx.Context{
		Config:            &config.Config{CorpID: tokCorpID, AgentID: "1000002"},
		AccessTokenHandle: tm,
	})
	_, err := client.SendText(message.SendTextRequest{
		SendRequestCommon: &message.SendRequestCommon{ToUser: "alice", MsgType: "text", AgentID: "1000002"},
		Text:              message.TextField{Content: "through silenceper"},
	})
	if err != nil {
		t.Fatalf("silenceper SendText: %v", err)
	}
	if d := e.sim.Delivered(); len(d) != 1 || d[0].Content != "through silenceper" {
		t.Errorf("delivered = %+v", d)
	}
	if s := e.sent(); len(s) != 1 || s[0].token != tok {
		t.Error("silenceper's client did not use the manager's token")
	}
	if got := e.sim.TotalTokenFetches(); got != 1 {
		t.Errorf("gettoken calls = %d, want 1", got)
	}
}

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
