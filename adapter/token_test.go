package adapter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work/config"
	workctx "github.com/silenceper/wechat/v2/work/context"
	"github.com/silenceper/wechat/v2/work/message"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/storage"
)

// The token tests run a TokenManager against the WeCom simulator behind a
// real HTTP server, on real SQLite, with a fake clock that both share: no
// test sleeps through an expiry, the clock is advanced instead. The refresh
// loops work in real time over the network, so a test waits for what they
// do with eventually (settle), or, where it needs a moment of quiet, by the
// clock's waiters (FakeClock.BlockUntilContext). A test that must know when
// every goroutine is blocked runs in a synctest bubble on an in-memory
// network (newMemTokEnv).

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
	e := newTokEnvOn(t, opts, nil)
	e.api = newAPIClient(e.srv.URL, 5*time.Second)
	return e
}

// newMemTokEnv is newTokEnv on an in-memory network (memNet), for a test in
// a synctest bubble: a request in flight is then durably blocked, and
// synctest.Wait tells when every goroutine waits. silenceper's clients
// cannot reach it.
func newMemTokEnv(t testing.TB, opts wecomsim.Options) *tokEnv {
	t.Helper()
	n := newMemNet()
	e := newTokEnvOn(t, opts, n)
	e.api = newAPIClient(e.srv.URL, 5*time.Second)
	e.api.http.Transport.(*http.Transport).DialContext = n.dial
	t.Cleanup(e.api.http.CloseIdleConnections)
	return e
}

// newTokEnvOn starts the simulator's server on l, or on a local TCP port
// when l is nil.
func newTokEnvOn(t testing.TB, opts wecomsim.Options, l net.Listener) *tokEnv {
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
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	})
	if l == nil {
		e.srv = httptest.NewServer(handler)
	} else {
		e.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: handler}}
		e.srv.Start()
	}
	t.Cleanup(e.srv.Close)
	return e
}

// memNet is an in-memory network between a test's server and its clients:
// a net.Listener whose connections are net.Pipe pairs made by dial. A pipe
// blocks on channels, which synctest sees as durably blocked; a socket it
// cannot see into.
type memNet struct {
	conns  chan net.Conn
	closed chan struct{}
	close  sync.Once
}

func newMemNet() *memNet {
	return &memNet{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (n *memNet) Accept() (net.Conn, error) {
	select {
	case c := <-n.conns:
		return c, nil
	case <-n.closed:
		return nil, net.ErrClosed
	}
}

func (n *memNet) Close() error {
	n.close.Do(func() { close(n.closed) })
	return nil
}

func (n *memNet) Addr() net.Addr { return memAddr{} }

// dial connects to the listener, whatever the address: an
// http.Transport's DialContext.
func (n *memNet) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case n.conns <- server:
		return client, nil
	case <-n.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "memnet" }

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

// settled reports whether tm holds a usable token whose refresh is not due.
func (e *tokEnv) settled(tm *TokenManager) bool {
	s := tm.cur.Load()
	return s != nil && !s.usableUntil.IsZero() && e.fake.Now().Before(s.refreshAt)
}

// settle waits until every manager's loop has done what fell due. The
// loops call WeCom (and Redis) over the network: a wait for real time.
func (e *tokEnv) settle(t testing.TB, tms ...*TokenManager) {
	t.Helper()
	for i, tm := range tms {
		eventually.True(t, func() bool { return e.settled(tm) }, "%s", lazy(func() string {
			now := e.fake.Now()
			msg := fmt.Sprintf("manager %d of %d did not settle at %s:", i, len(tms), now)
			if s := tm.cur.Load(); s != nil {
				msg += fmt.Sprintf(" fetched %s, refresh in %s, usable for %s, expires in %s (%s);",
					s.fetchedAt, s.refreshAt.Sub(now), s.usableUntil.Sub(now), s.expiresAt.Sub(now), s.source)
			}
			return fmt.Sprintf("%s status %+v; gettoken calls %d\n%s", msg, tm.Status(), e.sim.TotalTokenFetches(), e.log)
		}))
	}
}

// lazy is a description computed only when a check fails.
type lazy func() string

func (l lazy) String() string { return l() }

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
		synctest.Test(t, func(t *testing.T) {
			e := newMemTokEnv(t, wecomsim.Options{})
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
			// Every goroutine waits: the send was refused and has joined
			// the open flight.
			synctest.Wait()
			if r := e.sim.Rejected(); r[codeInvalidToken] != 1 {
				t.Fatalf("rejected = %v before the flight ended, want one 40014", r)
			}
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
