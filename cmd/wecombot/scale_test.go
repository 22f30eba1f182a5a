package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm/llmtest"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/storage/pgtest"
	"github.com/wecombot/wecombot/storage/redistest"
)

// The scale-out tests: three instances of the real binary on one
// Postgres database and one Redis, a round-robin proxy in front, and a fake
// WeCom that posts every message and then its retry, which the proxy hands
// to the next instance.

// scaleLease is pipeline.lease: how long an instance's claim on a user's
// pending messages lasts before another instance may take them over.
const scaleLease = 2 * time.Second

// scaleInterrupted is replies.interrupted.
const scaleInterrupted = "scale test: the answer was interrupted"

// roundRobin is the load balancer: every request goes to the next backend,
// a dead one answering 502 as nginx would.
type roundRobin struct {
	backends []*url.URL
	next     atomic.Uint64
	mu       sync.Mutex
	hits     []int // requests per backend
	failed   []int // of which the backend did not answer
}

func newRoundRobin(addrs []string) *roundRobin {
	rr := &roundRobin{hits: make([]int, len(addrs)), failed: make([]int, len(addrs))}
	for _, a := range addrs {
		rr.backends = append(rr.backends, &url.URL{Scheme: "http", Host: a})
	}
	return rr
}

type backendKey struct{}

func (rr *roundRobin) handler() http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int((rr.next.Add(1) - 1) % uint64(len(rr.backends)))
			rr.mu.Lock()
			rr.hits[i]++
			rr.mu.Unlock()
			r.SetURL(rr.backends[i])
			r.Out = r.Out.WithContext(context.WithValue(r.Out.Context(), backendKey{}, i))
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if i, ok := r.Context().Value(backendKey{}).(int); ok {
				rr.mu.Lock()
				rr.failed[i]++
				rr.mu.Unlock()
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}

func (rr *roundRobin) String() string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return fmt.Sprintf("requests per instance %v, unanswered %v", rr.hits, rr.failed)
}

// scaleCluster is three (or n) instances behind the proxy, with the shared
// WeCom simulator, LLM fake, database and Redis.
type scaleCluster struct {
	t      *testing.T
	bin    string
	sim    *wecomsim.Server
	llm    *llmtest.Server
	dsn    string
	redis  *redistest.Server
	aesKey string
	procs  []*process
	cfgs   []string
	rr     *roundRobin
	cb     *wecomsim.Callback
	msgID  atomic.Int64

	inflight []atomic.Int32 // LLM requests in flight, per instance
}

func startScaleCluster(t *testing.T, n int, respond func(llmtest.Request) llmtest.Reply) *scaleCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("runs three instances of the real binary on Postgres and Redis")
	}
	start := time.Now()
	dsn := pgtest.Start(t)
	c := &scaleCluster{t: t, dsn: dsn, aesKey: wecomsim.NewEncodingAESKey(), inflight: make([]atomic.Int32, n)}
	c.bin = buildBinary(t)
	c.redis = redistest.Start(t)
	c.msgID.Store(70000)

	c.sim = wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})
	simSrv := httptest.NewServer(c.sim.Handler())
	t.Cleanup(simSrv.Close)

	// One fake LLM; each instance calls it under its own prefix (/i<k>/v1),
	// so that the test sees which instance has answers in flight.
	c.llm = llmtest.New(respond)
	llmHandler := c.llm.Handler()
	llmSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var k int
		if _, err := fmt.Sscanf(r.URL.Path, "/i%d/", &k); err == nil && k >= 0 && k < n {
			c.inflight[k].Add(1)
			defer c.inflight[k].Add(-1)
		}
		llmHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { c.llm.Close(); llmSrv.Close() })

	dir := t.TempDir()
	var addrs []string
	for k := range n {
		addr := freeAddr(t)
		cfg := filepath.Join(dir, fmt.Sprintf("instance%d.yaml", k))
		yml := fmt.Sprintf(`
server: {addr: %q}
storage: {driver: postgres, dsn: %q}
redis: {addr: %q}
wecom: {api_base: %q}
llm: {base_url: %q, api_key: "${TEST_LLM_KEY}", model: m, timeout: 10s, max_concurrency: 4}
admin: {password: pw}
pipeline: {lease: %s}
replies: {interrupted: %q}
bots:
  - {name: helpdesk, corp_id: %q, agent_id: %d, secret: %q, token: %q, encoding_aes_key: %q}
`, addr, dsn, c.redis.Addr, simSrv.URL, fmt.Sprintf("%s/i%d/v1", llmSrv.URL, k), scaleLease, scaleInterrupted,
			testCorp, testAgent, testSecret, testToken, c.aesKey)
		if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		c.cfgs = append(c.cfgs, cfg)
		addrs = append(addrs, addr)
	}
	// One at a time: the first one migrates the fresh database.
	for k := range n {
		c.procs = append(c.procs, startBinary(t, c.bin, c.cfgs[k], addrs[k]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})

	c.rr = newRoundRobin(addrs)
	proxy := httptest.NewServer(c.rr.handler())
	t.Cleanup(proxy.Close)
	c.cb = &wecomsim.Callback{URL: proxy.URL + "/wecom/helpdesk/callback", Token: testToken, EncodingAESKey: c.aesKey, CorpID: testCorp}
	t.Logf("%d instances up behind %s in %v (postgres %s)", n, proxy.URL, time.Since(start).Round(time.Millisecond), dsn)
	return c
}

func (c *scaleCluster) dumpLogs() {
	for k, cfg := range c.cfgs {
		log, _ := os.ReadFile(cfg + ".log")
		const keep = 6000
		if len(log) > keep {
			log = append([]byte("…"), log[len(log)-keep:]...)
		}
		c.t.Logf("instance %d log (tail):\n%s", k, log)
	}
}

// deliver posts one message as WeCom does, through the proxy: until an
// instance acknowledges it (a dead instance's 502 is retried, which goes to
// the next one), and then once more, WeCom's retry, which the proxy hands
// to the next instance. Safe to call from several goroutines.
func (c *scaleCluster) deliver(user, content string) {
	c.t.Helper()
	xml := wecomsim.TextXML(testCorp, user, content, c.msgID.Add(1), time.Now().Unix(), testAgent)
	post := func(what string) {
		for attempt := 1; ; attempt++ {
			status, body, err := c.cb.Post(context.Background(), xml)
			if err == nil && status == http.StatusOK && body == "" {
				return
			}
			if attempt == 5 {
				c.t.Errorf("%s of %s/%q: %d %q %v after %d attempts", what, user, content, status, body, err, attempt)
				return
			}
		}
	}
	post("callback")
	post("WeCom's retry")
}

// kill ends instance k with SIGKILL.
func (c *scaleCluster) kill(k int) {
	c.t.Helper()
	p := c.procs[k]
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// waitDelivered waits until done holds for the messages WeCom delivered, or
// the deadline passes; it returns the deliveries and whether done held.
func (c *scaleCluster) waitDelivered(d time.Duration, done func([]wecomsim.Sent) bool) ([]wecomsim.Sent, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		got := c.sim.Delivered()
		if done(got) {
			return got, true
		}
		if _, err := c.sim.WaitDelivered(ctx, len(got)+1); err != nil {
			got = c.sim.Delivered()
			return got, done(got)
		}
	}
}

// waitSettled waits until the database holds want messages and none of them
// is still being answered or waiting for delivery, so that no further
// delivery can come, and fails the test if that takes longer than d. It
// returns the messages per state.
func (c *scaleCluster) waitSettled(d time.Duration, want int) map[string]int {
	c.t.Helper()
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	var states map[string]int
	var pending int
	eventually.Within(c.t, d, func() bool {
		states, pending = map[string]int{}, 0
		total, open := 0, 0
		rows, qerr := db.Query(`SELECT state, count(*) FROM messages GROUP BY state`)
		if qerr != nil {
			err = qerr
			return false
		}
		for rows.Next() {
			var s string
			var n int
			if rows.Scan(&s, &n) == nil {
				states[s] = n
				total += n
				switch s {
				case storage.MessageAnswered, storage.MessageFailed, storage.MessageIgnored:
				default:
					open += n
				}
			}
		}
		rows.Close()
		err = db.QueryRow(`SELECT count(*) FROM outbox WHERE state = $1`, storage.OutboxPending).Scan(&pending)
		return err == nil && total == want && open == 0 && pending == 0
	}, "the database did not settle: want %d messages, all answered, outbox empty; %v", want, later(func() string {
		return fmt.Sprintf("messages by state %v, outbox pending %d, err %v", states, pending, err)
	}))
	return states
}

// question is the k-th question of user u.
func question(u string, k int) string { return fmt.Sprintf("%s question %d", u, k) }

// sendInOrder delivers perUser questions of every user: a user's in order,
// the users at the same time.
func (c *scaleCluster) sendInOrder(users []string, perUser int) {
	start := time.Now()
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			for k := 1; k <= perUser; k++ {
				c.deliver(u, question(u, k))
			}
		})
	}
	wg.Wait()
	c.t.Logf("%d callbacks and their retries acknowledged in %v; %s", len(users)*perUser, time.Since(start).Round(time.Millisecond), c.rr)
}

// historyAnswer is the LLM fake's answer: it tells how many messages it was
// sent (system prompt, history, question), so history continuity shows.
func historyAnswer(q string, messages int) string {
	return fmt.Sprintf("answer to %q after %d messages", q, messages)
}

var scaleUsers = []string{"alice", "bob", "carol", "dave", "erin", "frank"}

// TestScaleOutThreeInstances: each message answered exactly once, one
// gettoken in all, and the history of a user continuous although its
// messages and their retries land on different instances.
func TestScaleOutThreeInstances(t *testing.T) {
	// The answers take a while, so that a user's next message (and its
	// retry) reaches other instances while the previous one is in flight:
	// its history must wait for that answer.
	c := startScaleCluster(t, 3, func(r llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: historyAnswer(lastUser(r), len(r.Messages)), Delay: 200 * time.Millisecond}
	})
	const perUser = 5

	start := time.Now()
	c.sendInOrder(scaleUsers, perUser)

	// answered: whatever the history, each question has an answer.
	answered := func(got []wecomsim.Sent) bool {
		seen := map[string]bool{}
		for _, s := range got {
			if q, ok := strings.CutPrefix(s.Content, "answer to "); ok {
				if i := strings.LastIndex(q, " after "); i > 0 {
					seen[q[:i]] = true
				}
			}
		}
		for _, u := range scaleUsers {
			for k := 1; k <= perUser; k++ {
				if !seen[strconv.Quote(question(u, k))] {
					return false
				}
			}
		}
		return true
	}
	got, ok := c.waitDelivered(30*time.Second, answered)
	t.Logf("%d deliveries after %v", len(got), time.Since(start).Round(time.Millisecond))
	if !ok {
		t.Errorf("not every message was answered within 30s: %d deliveries", len(got))
	}
	states := c.waitSettled(10*time.Second, len(scaleUsers)*perUser)
	t.Logf("settled after %v: messages by state %v", time.Since(start).Round(time.Millisecond), states)
	got = c.sim.Delivered()

	count := map[string]int{}
	byUser := map[string][]string{}
	for _, s := range got {
		count[s.Content]++
		byUser[s.ToUser] = append(byUser[s.ToUser], s.Content)
	}
	for _, u := range scaleUsers {
		var want []string
		for k := 1; k <= perUser; k++ {
			q := question(u, k)
			a := historyAnswer(q, 2*k) // system prompt + k-1 turns + the question
			want = append(want, a)
			if n := count[a]; n != 1 {
				var other []string
				for content, n := range count {
					if strings.HasPrefix(content, fmt.Sprintf("answer to %q ", q)) && content != a {
						other = append(other, fmt.Sprintf("%q ×%d", content, n))
					}
				}
				t.Errorf("%q answered %d times with %q, want exactly 1; other answers: %v", q, n, a, other)
			}
		}
		if g := strings.Join(byUser[u], " | "); g != strings.Join(want, " | ") {
			t.Errorf("%s got, in order:\n  %s\nwant:\n  %s", u, g, strings.Join(want, " | "))
		}
	}
	if len(got) != len(scaleUsers)*perUser {
		t.Errorf("%d deliveries, want %d", len(got), len(scaleUsers)*perUser)
	}
	if n := c.sim.TotalTokenFetches(); n != 1 {
		t.Errorf("gettoken called %d times by the three instances, want 1", n)
	}
	t.Logf("delivered %d, dropped by WeCom's duplicate check %d, LLM calls %d, gettoken %d; %s",
		len(got), len(c.sim.Dropped()), c.llm.Calls(), c.sim.TotalTokenFetches(), c.rr)
}

// TestScaleOutKillOneInstance kills -9 an instance while it has answers in
// flight: once its lease has expired the others finish its work, nothing
// lost, nothing twice.
func TestScaleOutKillOneInstance(t *testing.T) {
	const delay = 1500 * time.Millisecond
	c := startScaleCluster(t, 3, func(r llmtest.Request) llmtest.Reply {
		q := lastUser(r)
		// Two paragraphs, streamed slowly: the first is sent while the
		// second is being written.
		return llmtest.Reply{
			Content:    historyAnswer(q, len(r.Messages)) + "\n\nend of " + strconv.Quote(q),
			Delay:      delay,
			ChunkDelay: 20 * time.Millisecond,
		}
	})
	users := scaleUsers[:4]
	const perUser = 3
	last := func(u string) string { return u + " last question" }

	start := time.Now()
	c.sendInOrder(users, perUser)

	// Kill the instance with the most answers in flight once the first
	// paragraphs of most first answers are out: the answers are then
	// streaming, the victim's likely among them.
	victim, most := -1, int32(0)
	eventually.Within(t, 10*time.Second, func() bool {
		if len(c.sim.Delivered()) < len(users)-1 {
			return false
		}
		for k := range c.procs {
			if n := c.inflight[k].Load(); n > most {
				victim, most = k, n
			}
		}
		return victim >= 0
	}, "no answer streaming: %v", later(func() string {
		return fmt.Sprintf("LLM calls %d, deliveries %d", c.llm.Calls(), len(c.sim.Delivered()))
	}))
	c.kill(victim)
	killedAt := time.Now()
	t.Logf("killed instance %d with %d LLM requests in flight, after %v; in flight per instance then %d/%d/%d, deliveries so far %d",
		victim, most, killedAt.Sub(start).Round(time.Millisecond),
		c.inflight[0].Load(), c.inflight[1].Load(), c.inflight[2].Load(), len(c.sim.Delivered()))

	// One more message per user, through the proxy, some of them to the
	// dead instance first (502, so WeCom tries again).
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() { c.deliver(u, last(u)) })
	}
	wg.Wait()

	// A question is done when the end of its answer arrived; a question
	// whose answer was streaming when its instance died may end with the
	// interrupted notice instead.
	type tally struct{ finals, notices, open int }
	tallyOf := func(got []wecomsim.Sent) map[string]tally {
		count := map[[2]string]int{}
		for _, s := range got {
			count[[2]string{s.ToUser, s.Content}]++
		}
		out := map[string]tally{}
		for _, u := range users {
			var tl tally
			qs := []string{last(u)}
			for k := 1; k <= perUser; k++ {
				qs = append(qs, question(u, k))
			}
			for _, q := range qs {
				if count[[2]string{u, "end of " + strconv.Quote(q)}] > 0 {
					tl.finals++
				} else {
					tl.open++
				}
			}
			tl.notices = count[[2]string{u, scaleInterrupted}]
			out[u] = tl
		}
		return out
	}
	done := func(got []wecomsim.Sent) bool {
		for _, tl := range tallyOf(got) {
			if tl.open > tl.notices {
				return false
			}
		}
		return true
	}
	got, ok := c.waitDelivered(30*time.Second, done)
	t.Logf("all answered %v after the kill (lease %v)", time.Since(killedAt).Round(time.Millisecond), scaleLease)
	if !ok {
		t.Errorf("not every message was answered within 30s of the kill: %v", tallyOf(got))
	}
	states := c.waitSettled(10*time.Second, len(users)*(perUser+1))
	got = c.sim.Delivered()

	for u, tl := range tallyOf(got) {
		if tl.open != tl.notices {
			t.Errorf("%s: %d questions without the end of their answer but %d interrupted notices, want as many", u, tl.open, tl.notices)
		}
	}
	count := map[[2]string]int{}
	for _, s := range got {
		count[[2]string{s.ToUser, s.Content}]++
	}
	for k, n := range count {
		if n != 1 {
			t.Errorf("%s got %q %d times, want at most once", k[0], k[1], n)
		}
	}
	for _, u := range users {
		for k := 1; k <= perUser+1; k++ {
			q := last(u)
			if k <= perUser {
				q = question(u, k)
			}
			if count[[2]string{u, "end of " + strconv.Quote(q)}] == 1 {
				first := 0
				for key, n := range count {
					if key[0] == u && strings.HasPrefix(key[1], fmt.Sprintf("answer to %q after ", q)) {
						first += n
					}
				}
				if first != 1 {
					t.Errorf("%q: its answer's end arrived, its first paragraph %d times, want once", q, first)
				}
			}
		}
	}
	t.Logf("per user %+v", tallyOf(got))
	for _, s := range c.sim.Dropped() {
		// A part sent again after the kill (the victim died between the
		// send and its record), swallowed by WeCom's duplicate check.
		t.Logf("dropped by WeCom's duplicate check: %s %q", s.ToUser, s.Content)
	}
	t.Logf("states %v; delivered %d, dropped by WeCom's duplicate check %d, LLM calls %d, gettoken %d; %s",
		states, len(got), len(c.sim.Dropped()), c.llm.Calls(), c.sim.TotalTokenFetches(), c.rr)
}

// TestScaleOutRedisDown stops Redis under three instances: they keep
// answering, each message exactly once, the dedupe falling back to the
// shared database.
func TestScaleOutRedisDown(t *testing.T) {
	c := startScaleCluster(t, 3, func(r llmtest.Request) llmtest.Reply {
		return llmtest.Reply{Content: "answer to " + strconv.Quote(lastUser(r))}
	})
	answered := func(round int) func([]wecomsim.Sent) bool {
		return func(got []wecomsim.Sent) bool {
			seen := map[string]bool{}
			for _, s := range got {
				seen[s.Content] = true
			}
			for _, u := range scaleUsers {
				for r := 1; r <= round; r++ {
					if !seen["answer to "+strconv.Quote(question(u, r))] {
						return false
					}
				}
			}
			return true
		}
	}
	send := func(round int) {
		var wg sync.WaitGroup
		for _, u := range scaleUsers {
			wg.Go(func() { c.deliver(u, question(u, round)) })
		}
		wg.Wait()
	}

	start := time.Now()
	send(1)
	if got, ok := c.waitDelivered(20*time.Second, answered(1)); !ok {
		t.Fatalf("with Redis up, not every message was answered within 20s: %d deliveries", len(got))
	}
	t.Logf("with Redis up: answered in %v, gettoken %d", time.Since(start).Round(time.Millisecond), c.sim.TotalTokenFetches())

	c.redis.Stop()
	t.Logf("%s stopped", c.redis.Kind)
	start = time.Now()
	for round := 2; round <= 3; round++ {
		send(round)
	}
	got, ok := c.waitDelivered(20*time.Second, answered(3))
	t.Logf("with Redis down: %d deliveries after %v", len(got), time.Since(start).Round(time.Millisecond))
	if !ok {
		t.Errorf("with Redis down, not every message was answered within 20s: %d deliveries", len(got))
	}
	states := c.waitSettled(10*time.Second, len(scaleUsers)*3)
	count := map[string]int{}
	for _, s := range c.sim.Delivered() {
		count[s.Content]++
	}
	for _, u := range scaleUsers {
		for r := 1; r <= 3; r++ {
			if n := count["answer to "+strconv.Quote(question(u, r))]; n != 1 {
				t.Errorf("%q answered %d times, want exactly 1", question(u, r), n)
			}
		}
	}
	if n := len(c.sim.Delivered()); n != len(scaleUsers)*3 {
		t.Errorf("%d deliveries, want %d", n, len(scaleUsers)*3)
	}
	t.Logf("states %v; delivered %d, dropped by WeCom's duplicate check %d, gettoken %d; %s",
		states, len(c.sim.Delivered()), len(c.sim.Dropped()), c.sim.TotalTokenFetches(), c.rr)
}
