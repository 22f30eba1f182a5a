package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/storage/pgtest"
)

// TestMain stops the tests' Postgres server (see pgtest) at the end.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// eachDriver runs f as the subtests sqlite and postgres. Inside them newDB,
// openDB and freshDSN use the subtest's driver. Without a Postgres server
// the postgres subtests are skipped loudly (failed under
// WECOMBOT_REQUIRE_POSTGRES=1: CI).
func eachDriver(t *testing.T, f func(t *testing.T)) {
	t.Run("sqlite", f)
	t.Run("postgres", f)
}

// driverOf is the driver of the eachDriver subtest t is, or is inside of;
// sqlite for tests that are not run by eachDriver.
func driverOf(t testing.TB) string {
	for _, part := range strings.Split(t.Name(), "/")[1:] {
		if name, _, _ := strings.Cut(part, "#"); name == "postgres" { // postgres#01 if run twice
			return "postgres"
		}
	}
	return "sqlite"
}

// freshDSN is the DSN of a new, empty database of t's driver: a file in the
// test's temporary folder, or a database of its own on the test server.
func freshDSN(t *testing.T) string {
	t.Helper()
	if driverOf(t) == "postgres" {
		return pgtest.Start(t)
	}
	return filepath.Join(t.TempDir(), "x.db")
}

// t0 is the start of every test clock; whole seconds plus a fraction, so that
// the fractional part of stored times is exercised too.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 500_000_000, time.UTC)

// fakeClock is the injected DB.Now. Tests move it from the test goroutine
// only; concurrent readers are fine.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// openDB opens dsn with t's driver, closes it at the end of the test and
// installs a fake clock set to t0.
func openDB(t *testing.T, dsn string) (*DB, *fakeClock) {
	t.Helper()
	db, err := Open(t.Context(), Config{Driver: driverOf(t), DSN: dsn})
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() }) // Close is idempotent.
	clk := &fakeClock{now: t0}
	db.Now = clk.Now
	return db, clk
}

// newDB opens a fresh database of t's driver (sqlite outside eachDriver).
func newDB(t *testing.T) (*DB, *fakeClock) {
	t.Helper()
	return openDB(t, freshDSN(t))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// insertMsg stores a new text message and returns it with its id.
func insertMsg(t *testing.T, db *DB, bot, user, key string) Message {
	t.Helper()
	m := Message{Bot: bot, DedupeKey: key, UserID: user, MsgType: "text", Content: "q " + key}
	ok, err := db.InsertMessage(t.Context(), &m)
	if err != nil || !ok {
		t.Fatalf("InsertMessage(%s/%s) = %v, %v; want true, nil", bot, key, ok, err)
	}
	return m
}

// answer saves an answer to m made of parts (and one conversation pair).
func answer(t *testing.T, db *DB, m Message, parts ...string) {
	t.Helper()
	must(t, db.SaveAnswer(t.Context(), Answer{
		MessageID: m.ID, Bot: m.Bot, UserID: m.UserID,
		UserTurn: m.Content, AssistantTurn: strings.Join(parts, ""), Parts: parts,
	}))
}

func message(t *testing.T, db *DB, id int64) Message {
	t.Helper()
	m, err := db.GetMessage(t.Context(), id)
	must(t, err)
	return m
}

// due returns the contents of the parts DueParts gives at now.
func due(t *testing.T, db *DB, now time.Time, limit int) []string {
	t.Helper()
	parts, err := db.DueParts(t.Context(), now, limit)
	must(t, err)
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.Content
	}
	return out
}

func TestOpenCreatesFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	for _, dsn := range []string{
		filepath.Join(dir, "x.db"),
		"file:" + filepath.Join(dir, "y.db") + "?cache=private",
	} {
		t.Run(dsn, func(t *testing.T) {
			db, _ := openDB(t, dsn)
			must(t, db.Ping(t.Context()))
			must(t, db.Close())
		})
	}
	for _, name := range []string{"x.db", "y.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("database file not created: %v", err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown driver", Config{Driver: "mysql", DSN: "x.db"}, "unknown driver"},
		{"empty dsn", Config{Driver: "sqlite"}, "dsn is empty"},
		{"empty dsn, default driver", Config{}, "dsn is empty"},
		{"empty dsn, postgres", Config{Driver: "postgres"}, "dsn is empty"},
		{"bad postgres dsn", Config{Driver: "postgres", DSN: "postgres://h:notaport/db"}, "postgres dsn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := Open(t.Context(), tt.cfg)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

// Instances of the service that start together on one Postgres database
// migrate it together: each Open must succeed.
func TestOpenConcurrentMigrations(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		for range 3 {
			dsn := freshDSN(t)
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					db, err := Open(t.Context(), Config{Driver: "postgres", DSN: dsn})
					if err != nil {
						t.Error(err)
						return
					}
					db.Close()
				})
			}
			wg.Wait()
		}
	})
}

func TestSQLiteDSN(t *testing.T) {
	const pragmas = "_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate&_foreign_keys=1"
	dir := t.TempDir()
	tests := []struct{ in, want string }{
		{":memory:", "file::memory:?" + pragmas},
		{"x.db", "x.db?" + pragmas},
		{dir + "/x.db", dir + "/x.db?" + pragmas},
		{"file:" + dir + "/x.db?cache=private", "file:" + dir + "/x.db?cache=private&" + pragmas},
	}
	for _, tt := range tests {
		got, err := sqliteDSN(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("sqliteDSN(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestOpenMemory(t *testing.T) {
	a, _ := openDB(t, ":memory:")
	b, _ := openDB(t, ":memory:")
	m := insertMsg(t, a, "bot", "u", "k1")
	answer(t, a, m, "one", "two")
	// The single connection keeps the in-memory database alive across calls.
	if got := due(t, a, t0, 10); len(got) != 1 || got[0] != "one" {
		t.Errorf("DueParts = %q, want [one]", got)
	}
	if got := message(t, a, m.ID); got.State != MessageAnswering {
		t.Errorf("state = %q, want %q", got.State, MessageAnswering)
	}
	// Each Open of ":memory:" is its own database.
	if _, err := b.GetMessage(t.Context(), m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("other in-memory database GetMessage err = %v, want ErrNotFound", err)
	}
}

// TestReopenKeepsData simulates a restart: everything written before Close is
// there after Open of the same file, and dedupe still holds.
func TestReopenKeepsData(t *testing.T) { eachDriver(t, testReopenKeepsData) }

func testReopenKeepsData(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "data", "bot.db")
	if driverOf(t) == "postgres" {
		dsn = pgtest.Start(t)
	}
	db, clk := openDB(t, dsn)
	ctx := t.Context()
	tok := Token{Bot: "bot", CorpID: "corp", AgentID: 1000002, Value: "tok-1",
		ExpiresAt: t0.Add(2 * time.Hour), FetchedAt: t0}
	must(t, db.SaveToken(ctx, tok))
	m1 := insertMsg(t, db, "bot", "u", "msg-1")
	m2 := insertMsg(t, db, "bot", "u", "msg-2")
	answer(t, db, m1, "p1", "p2", "p3")
	parts, err := db.DueParts(ctx, clk.now, 10)
	must(t, err)
	must(t, db.MarkSent(ctx, parts[0].ID, "wx-1"))
	must(t, db.Close())

	db, clk = openDB(t, dsn)
	got, err := db.LoadToken(ctx, "bot")
	must(t, err)
	if got.Value != "tok-1" || got.RefreshCount != 1 || got.AgentID != 1000002 {
		t.Errorf("token after restart = %+v", got)
	}
	sameTime(t, "ExpiresAt", got.ExpiresAt, tok.ExpiresAt)
	if ok, err := db.InsertMessage(ctx, &Message{Bot: "bot", DedupeKey: "msg-1", UserID: "u"}); ok || err != nil {
		t.Errorf("InsertMessage of a known key after restart = %v, %v; want false, nil", ok, err)
	}
	un, err := db.UnansweredMessages(ctx)
	must(t, err)
	if len(un) != 1 || un[0].ID != m2.ID {
		t.Errorf("UnansweredMessages after restart = %+v, want only message %d", un, m2.ID)
	}
	if got := due(t, db, clk.now, 10); len(got) != 1 || got[0] != "p2" {
		t.Errorf("DueParts after restart = %q, want [p2]", got)
	}
	h, err := db.History(ctx, "bot", "u", 5)
	must(t, err)
	if len(h) != 2 {
		t.Errorf("History after restart has %d turns, want 2", len(h))
	}
}

// TestTimesInShanghai runs with a clock (and a local zone) eight hours ahead
// of UTC. SQLite compares times as text, so a mix of offsets would make a
// part due at 20:00+08:00 look later than 12:30+00:00.
func TestTimesInShanghai(t *testing.T) { eachDriver(t, testTimesInShanghai) }

func testTimesInShanghai(t *testing.T) {
	cst := time.FixedZone("CST", 8*3600)
	oldLocal := time.Local
	time.Local = cst
	t.Cleanup(func() { time.Local = oldLocal })

	db, _ := newDB(t)
	ctx := t.Context()
	now := t0.In(cst) // 20:00:00.5 CST == 12:00:00.5 UTC
	db.Now = func() time.Time { return now }

	m := insertMsg(t, db, "bot", "u", "k")
	sameTime(t, "ReceivedAt", message(t, db, m.ID).ReceivedAt, now)
	// Both drivers hand times back in UTC, whatever time.Local is.
	if loc := message(t, db, m.ID).ReceivedAt.Location(); loc != time.UTC {
		t.Errorf("ReceivedAt read back in %v, want UTC", loc)
	}
	answer(t, db, m, "a")

	if driverOf(t) == "postgres" {
		// Postgres keeps instants (timestamptz): no offset is stored.
		var typ string
		must(t, db.db.Raw("SELECT data_type FROM information_schema.columns WHERE table_name = 'outbox' AND column_name = 'next_attempt_at'").Scan(&typ).Error)
		if typ != "timestamp with time zone" {
			t.Errorf("next_attempt_at has type %q, want timestamp with time zone", typ)
		}
	} else {
		var stored string
		must(t, db.db.Raw("SELECT next_attempt_at || '' FROM outbox").Scan(&stored).Error)
		if !strings.HasSuffix(stored, "+00:00") {
			t.Errorf("next_attempt_at stored as %q, want UTC", stored)
		}
	}

	utc := now.UTC()
	tests := []struct {
		name string
		at   time.Time
		want int
	}{
		{"now, CST", now, 1},
		{"now, UTC", utc, 1},
		{"a second earlier, CST", now.Add(-time.Second), 0},
		{"a nanosecond earlier, UTC", utc.Add(-time.Nanosecond), 0},
		{"half an hour later, UTC", utc.Add(30 * time.Minute), 1},
	}
	for _, tt := range tests {
		if got := due(t, db, tt.at, 10); len(got) != tt.want {
			t.Errorf("DueParts(%s) = %q, want %d part(s)", tt.name, got, tt.want)
		}
	}

	parts, err := db.DueParts(ctx, now, 10)
	must(t, err)
	id := parts[0].ID
	// Rescheduled to 13:00 UTC, given in UTC: not due at 20:30 CST (12:30 UTC),
	// which as text would sort after "13:00".
	next := time.Date(2025, 3, 1, 13, 0, 0, 0, time.UTC)
	must(t, db.Reschedule(ctx, id, next, "rate limited", true))
	if got := due(t, db, time.Date(2025, 3, 1, 20, 30, 0, 0, cst), 10); len(got) != 0 {
		t.Errorf("DueParts(20:30 CST) = %q, want none before 13:00 UTC", got)
	}
	if got := due(t, db, time.Date(2025, 3, 1, 21, 0, 0, 0, cst), 10); len(got) != 1 {
		t.Errorf("DueParts(21:00 CST) = %q, want the part", got)
	}
	at, ok, err := db.NextDue(ctx)
	must(t, err)
	if !ok {
		t.Fatal("NextDue: nothing pending")
	}
	sameTime(t, "NextDue", at, next)

	// Rescheduled to 20:10 CST (12:10 UTC), given in CST: due at 12:30 UTC,
	// which as text would sort before "20:10".
	next = time.Date(2025, 3, 1, 20, 10, 0, 0, cst)
	must(t, db.Reschedule(ctx, id, next, "rate limited", true))
	if got := due(t, db, time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC), 10); len(got) != 1 {
		t.Errorf("DueParts(12:30 UTC) = %q, want the part due since 12:10 UTC", got)
	}
	if got := due(t, db, time.Date(2025, 3, 1, 12, 5, 0, 0, time.UTC), 10); len(got) != 0 {
		t.Errorf("DueParts(12:05 UTC) = %q, want none", got)
	}
	at, _, err = db.NextDue(ctx)
	must(t, err)
	sameTime(t, "NextDue", at, next)
}

// A database made by an earlier version loses the index the new one covers,
// and finding a user's next pending message reads the (bot, user_id, state)
// index, not the user's whole history.
func TestMigrationReplacesUserIndex(t *testing.T) { eachDriver(t, testMigrationReplacesUserIndex) }

func testMigrationReplacesUserIndex(t *testing.T) {
	dsn := freshDSN(t)
	db, _ := openDB(t, dsn)
	must(t, db.db.Exec("CREATE INDEX idx_messages_user ON messages (bot, user_id)").Error)
	must(t, db.Close())
	db, _ = openDB(t, dsn)
	m := db.db.Migrator()
	if m.HasIndex(&messageRow{}, "idx_messages_user") {
		t.Fatal("the superseded index idx_messages_user is still there after a migration")
	}
	if !m.HasIndex(&messageRow{}, "idx_messages_user_state") {
		t.Fatal("no idx_messages_user_state")
	}
	if driverOf(t) != "sqlite" {
		return
	}
	var plan []struct {
		ID, Parent, Notused int
		Detail              string
	}
	must(t, db.db.Raw("EXPLAIN QUERY PLAN SELECT * FROM messages WHERE bot = ? AND user_id = ? AND "+pendingMessage+" ORDER BY id LIMIT 1", "b", "u").Scan(&plan).Error)
	var details []string
	for _, p := range plan {
		details = append(details, p.Detail)
	}
	if got := strings.Join(details, "; "); !strings.Contains(got, "idx_messages_user_state (bot=? AND user_id=? AND state=?)") {
		t.Fatalf("next pending message: query plan %q does not search by state", got)
	}
}
