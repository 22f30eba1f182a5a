package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"gorm.io/gorm"
)

// The ingest goes first, but at most highTurns times in a row while an
// answer-path statement waits; waiters of one priority go in arrival order.
// The arrival order is decided by synctest: each waiter is queued at the
// gate before the next one starts.
func TestGateHighPriorityFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{}
		g.acquire(false) // a statement in progress
		var mu sync.Mutex
		var order []string
		var wg sync.WaitGroup
		queued := func(high, low int) {
			t.Helper()
			synctest.Wait()
			g.mu.Lock()
			h, l := len(g.high), len(g.low)
			g.mu.Unlock()
			if h != high || l != low {
				t.Fatalf("waiters %d high, %d low; want %d, %d", h, l, high, low)
			}
		}
		wait := func(name string, high bool) {
			wg.Go(func() {
				g.acquire(high)
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				g.release()
			})
		}
		wait("low1", false)
		queued(0, 1)
		wait("low2", false)
		queued(0, 2)
		wait("high1", true)
		queued(1, 2)
		wait("high2", true)
		queued(2, 2)
		wait("high3", true)
		queued(3, 2)
		wait("high4", true)
		queued(4, 2)
		g.release()
		wg.Wait()
		if got := fmt.Sprint(order); got != "[high1 high2 low1 high3 high4 low2]" { // two high, then one low
			t.Fatalf("order %s", got)
		}
		g.acquire(true) // free again: no wait
		g.release()
	})
}

// GORM's statements are prepared once and reused; inside a transaction the
// prepared statement runs as part of it (a rollback undoes its write).
func TestStmtCacheInsideAndOutsideTransactions(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	const count = "SELECT count(*) FROM messages WHERE bot = ?"
	const insert = "INSERT INTO messages (bot, dedupe_key, user_id, msg_type, state) VALUES (?, ?, 'u', 'text', 'received')"
	countRows := func() int64 {
		t.Helper()
		var n int64
		must(t, db.db.WithContext(ctx).Raw(count, "b").Scan(&n).Error)
		return n
	}
	if n := countRows(); n != 0 {
		t.Fatalf("count %d on an empty table", n)
	}
	if st, _ := db.stmts.lookup(count, false); st == nil {
		t.Fatal("a query run outside a transaction was not prepared")
	}

	// First transaction: insert is not prepared yet; it is after the commit.
	must(t, db.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return tx.Exec(insert, "b", "k1").Error
	}))
	if st, _ := db.stmts.lookup(insert, true); st == nil {
		t.Fatal("a statement run inside a transaction was not prepared after it")
	}
	// Now prepared: a rolled-back transaction leaves nothing behind.
	errRollback := errors.New("roll back")
	err := db.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(insert, "b", "k2").Error; err != nil {
			return err
		}
		var n int64
		if err := tx.Raw(count, "b").Scan(&n).Error; err != nil {
			return err
		}
		if n != 2 {
			t.Errorf("inside the transaction: count %d, want 2", n)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("transaction: %v", err)
	}
	if n := countRows(); n != 1 {
		t.Fatalf("after the rollback: count %d, want 1", n)
	}
	// A failing statement still reports its error, prepared or not.
	if err := db.db.WithContext(ctx).Exec(insert, "b", "k1").Error; err == nil {
		t.Fatal("duplicate insert through the cache: no error")
	}
	if err := db.db.WithContext(ctx).Exec("SELECT nosuchcolumn FROM messages").Error; err == nil {
		t.Fatal("bad SQL: no error")
	}
}

func TestStmtCacheOnlySingleDataStatements(t *testing.T) {
	many := "SELECT * FROM messages WHERE id IN (?" + strings.Repeat(", ?", maxStmtParams) + ")"
	for _, c := range []struct {
		text       string
		want, exec bool
	}{
		{"SELECT 1", true, false},
		{"select * from messages", true, false},
		{"UPDATE messages SET state = ?", true, true},
		{"DELETE FROM outbox", true, true},
		{"INSERT INTO t VALUES (1)", true, true},
		{"UPDATE outbox SET state = ? WHERE id = ? RETURNING message_id", true, false},
		// Exec leaves a statement that returns rows unfinished.
		{"UPDATE outbox SET state = ? WHERE id = ? RETURNING message_id", false, true},
		{"SELECT 1", false, true},
		{many, false, false},
		{"CREATE TABLE t (a)", false, true},
		{"SELECT 1; DELETE FROM messages", false, true},
		{"PRAGMA table_info(messages)", false, false},
		{"ALTER TABLE t ADD COLUMN b integer", false, true},
		{"", false, true},
	} {
		if got := cacheable(c.text, c.exec); got != c.want {
			t.Errorf("cacheable(%q, exec %v) = %v, want %v", c.text, c.exec, got, c.want)
		}
	}
	db, _ := newDB(t)
	// Texts that never repeat stop being cached at the bound, and still run.
	for i := range maxCachedStmts + 10 {
		var n int64
		must(t, db.db.WithContext(t.Context()).Raw(fmt.Sprintf("SELECT %d", i)).Scan(&n).Error)
		if n != int64(i) {
			t.Fatalf("SELECT %d gave %d", i, n)
		}
	}
	db.stmts.mu.Lock()
	n := len(db.stmts.m)
	db.stmts.mu.Unlock()
	if n != maxCachedStmts {
		t.Fatalf("%d statements cached, want the bound %d", n, maxCachedStmts)
	}
}

// A statement whose context is done fails with the context's error and
// writes nothing, in or out of a transaction.
func TestGatedPoolDoneContext(t *testing.T) {
	db, _ := newDB(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	const insert = "INSERT INTO messages (bot, dedupe_key, user_id, msg_type, state) VALUES ('b', 'k', 'u', 'text', 'received')"
	if err := db.db.WithContext(ctx).Exec(insert).Error; !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec with a cancelled context: %v", err)
	}
	var n int64
	if err := db.db.WithContext(ctx).Raw("SELECT count(*) FROM messages").Scan(&n).Error; !errors.Is(err, context.Canceled) {
		t.Fatalf("query with a cancelled context: %v", err)
	}
	err := db.db.WithContext(t.Context()).Transaction(func(tx *gorm.DB) error {
		return tx.WithContext(ctx).Exec(insert).Error
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec in a transaction with a cancelled context: %v", err)
	}
	if got := messageCount(t, db); got != 0 {
		t.Fatalf("%d messages stored", got)
	}
}

// A statement whose context ends while it waits at the gate fails with the
// context's error, does not run, and leaves the gate to the others.
func TestGatedPoolCancelledWhileWaiting(t *testing.T) {
	const insert = "INSERT INTO messages (bot, dedupe_key, user_id, msg_type, state) VALUES ('b', 'k', 'u', 'text', 'received')"
	t.Run("statement", func(t *testing.T) {
		testCancelledWhileWaiting(t, func(db *gorm.DB) error { return db.Exec(insert).Error })
	})
	t.Run("transaction", func(t *testing.T) {
		testCancelledWhileWaiting(t, func(db *gorm.DB) error {
			return db.Transaction(func(tx *gorm.DB) error { return tx.Exec(insert).Error })
		})
	})
}

// testCancelledWhileWaiting runs write while the gate is busy, cancels its
// context while it waits, and checks that it fails and wrote nothing. The
// database is opened outside the synctest bubble: inside it run only the
// gate and the write, which fails before it reaches SQLite.
func testCancelledWhileWaiting(t *testing.T, write func(*gorm.DB) error) {
	db, _ := newDB(t)
	synctest.Test(t, func(t *testing.T) {
		db.gate.acquire(false) // a statement in progress
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			errc <- write(db.db.WithContext(ctx))
		}()
		synctest.Wait() // the write has stopped: at the gate, if anywhere
		db.gate.mu.Lock()
		waiting := len(db.gate.low)
		db.gate.mu.Unlock()
		if waiting != 1 {
			t.Fatalf("%d writes wait at the gate, want 1", waiting)
		}
		cancel()
		db.gate.release()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("write cancelled while waiting: %v", err)
		}
	})
	if got := messageCount(t, db); got != 0 { // also: the gate is free again
		t.Fatalf("%d messages stored by a cancelled statement", got)
	}
}

// TestGatedTxCancelledBetweenStatements: a transaction began, then its
// caller gave up: the next statement fails with the cancellation, nothing of
// the transaction is kept, and the connection is free again.
func TestGatedTxCancelledBetweenStatements(t *testing.T) {
	db, _ := newDB(t)
	ctx, cancel := context.WithCancel(t.Context())
	err := db.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("INSERT INTO messages (bot, dedupe_key, user_id, msg_type, state) VALUES ('b', 'k1', 'u', 'text', 'received')").Error; err != nil {
			return err
		}
		cancel()
		return tx.Exec("INSERT INTO messages (bot, dedupe_key, user_id, msg_type, state) VALUES ('b', 'k2', 'u', 'text', 'received')").Error
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("transaction cancelled between its statements: %v", err)
	}
	if got := messageCount(t, db); got != 0 { // also: the gate is free again
		t.Fatalf("%d messages kept by a rolled-back transaction", got)
	}
}
