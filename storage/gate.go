package storage

import (
	"context"
	"database/sql"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// highTurns is how many callers of high priority go in a row while one of
// low priority waits. Under a flood of callbacks (closed loop, 2 cores) 1
// gave the ingest 0.27–0.49× the baseline's callbacks a second and an ack
// p99 up to 96 ms; 2 gave 0.37–0.65× and 32–51 ms, with the answers still
// at 150–280 a second (BENCHMARKS.md, the flood run).
const highTurns = 2

// gate hands SQLite's one connection to one caller at a time, callers of
// high priority (the ingest) first, but at most highTurns in a row while a
// caller of low priority waits. database/sql queues the callers of a busy
// connection in no particular order: under load the ingest of callbacks,
// which WeCom waits for, stood behind every write of the answer path (p99
// ack 47–67 ms at 1,000 callbacks/s, against the ack target p99 < 50 ms).
// With the gate it waits for the statement in progress, the ingest ahead of
// it and one answer-path statement per highTurns of those. Taking turns
// keeps answers going during a flood of callbacks (the target of at least
// 100 answers a second under a flood), where strict priority let them
// through at a few a second.
type gate struct {
	mu        sync.Mutex
	busy      bool
	highRun   int // callers of high priority served in a row while one of low priority waited
	high, low []chan struct{}
}

func (g *gate) acquire(high bool) {
	g.mu.Lock()
	if !g.busy {
		g.busy = true
		g.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	if high {
		g.high = append(g.high, ch)
	} else {
		g.low = append(g.low, ch)
	}
	g.mu.Unlock()
	<-ch // handed over by release, still busy
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case len(g.high) > 0 && (g.highRun < highTurns || len(g.low) == 0):
		close(g.high[0])
		g.high = g.high[1:]
		if len(g.low) > 0 {
			g.highRun++
		}
	case len(g.low) > 0:
		close(g.low[0])
		g.low = g.low[1:]
		g.highRun = 0
	default:
		g.busy = false
	}
}

// gatedPool is the connection pool GORM sees for SQLite: every statement,
// and every transaction from begin to commit, passes the gate after the
// ingest (which does not use GORM: ingest.writeTx). Rows of a
// query are read after the gate is passed on; the next holder then waits in
// database/sql for that moment only.
//
// A statement whose context is already done fails with its error; one that
// starts runs to its end. The SQLite driver starts a goroutine for every
// row read and every statement run under a context that can be cancelled
// (to interrupt it); our statements take microseconds, so they run under
// context.WithoutCancel instead.
type gatedPool struct {
	db    *sql.DB
	g     *gate
	stmts *stmtCache
}

var (
	_ gorm.ConnPool         = gatedPool{}
	_ gorm.ConnPoolBeginner = gatedPool{}
	_ gorm.GetDBConnector   = gatedPool{}
)

func (p gatedPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	p.g.acquire(false)
	defer p.g.release()
	return p.db.PrepareContext(ctx, query)
}

// detach is the context a statement runs under: ctx's error if it is done,
// else ctx without its cancellation.
func detach(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// enter passes the gate for one statement; it fails, without keeping the
// gate, if ctx ended before or while waiting. The statement then runs under
// the returned context, which cannot be cancelled.
func (p gatedPool) enter(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.g.acquire(false)
	detached, err := detach(ctx)
	if err != nil {
		p.g.release()
	}
	return detached, err
}

func (p gatedPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, err := p.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer p.g.release()
	if st := p.stmts.prepared(ctx, p.db, query, true); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.db.ExecContext(ctx, query, args...)
}

func (p gatedPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx, err := p.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer p.g.release()
	if st := p.stmts.prepared(ctx, p.db, query, false); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.db.QueryContext(ctx, query, args...)
}

func (p gatedPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	detached, err := p.enter(ctx)
	if err != nil {
		return p.db.QueryRowContext(ctx, query, args...) // a Row holding ctx's error; no connection is taken
	}
	defer p.g.release()
	if st := p.stmts.prepared(detached, p.db, query, false); st != nil {
		return st.QueryRowContext(detached, args...)
	}
	return p.db.QueryRowContext(detached, query, args...)
}

// BeginTx holds the gate until the transaction ends. Like a statement, a
// transaction that begins runs to its end: ctx is checked before and after
// the wait at the gate, and BEGIN runs without its cancellation (the driver
// would start a goroutine per transaction to watch it).
func (p gatedPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	ctx, err := p.enter(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := p.db.BeginTx(ctx, opts)
	if err != nil {
		p.g.release()
		return nil, err
	}
	return &gatedTx{Tx: tx, p: p}, nil
}

func (p gatedPool) GetDBConn() (*sql.DB, error) { return p.db, nil }

// gatedTx is a transaction holding the gate. Its statements run prepared
// when the cache has them; those it lacks are prepared after the commit,
// while the gate is still held (the transaction holds the only connection,
// so they cannot be prepared during it).
type gatedTx struct {
	*sql.Tx
	p      gatedPool
	missed []missedStmt
	once   sync.Once
}

func (t *gatedTx) stmt(ctx context.Context, query string, exec bool) *sql.Stmt {
	st, ok := t.p.stmts.lookup(query, exec)
	if st != nil {
		return t.Tx.StmtContext(ctx, st) // the statement of this connection: not prepared again
	}
	if ok {
		t.missed = append(t.missed, missedStmt{query, exec})
	}
	return nil
}

func (t *gatedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, err := detach(ctx)
	if err != nil {
		return nil, err
	}
	if st := t.stmt(ctx, query, true); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *gatedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx, err := detach(ctx)
	if err != nil {
		return nil, err
	}
	if st := t.stmt(ctx, query, false); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *gatedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if detached, err := detach(ctx); err == nil {
		ctx = detached
	} // else the Row reports ctx's error
	if st := t.stmt(ctx, query, false); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

func (t *gatedTx) Commit() error {
	err := t.Tx.Commit()
	t.once.Do(t.end)
	return err
}

func (t *gatedTx) Rollback() error {
	err := t.Tx.Rollback()
	t.once.Do(t.end)
	return err
}

// end prepares what the transaction missed and passes the gate on.
func (t *gatedTx) end() {
	for _, q := range t.missed {
		t.p.stmts.prepared(context.Background(), t.p.db, q.query, q.exec)
	}
	t.p.g.release()
}

type missedStmt struct {
	query string
	exec  bool
}

// maxCachedStmts bounds the statement cache. GORM writes the same SQL for
// the same call, so the service uses a few dozen texts; those that vary
// (an IN list of changing length) stop being cached at the bound.
const maxCachedStmts = 256

// stmtCache keeps the statements GORM sends to SQLite prepared on its one
// connection. GORM prepares nothing itself, and compiling each statement
// (sqlite3_prepare_v2) was a sixth of the SQLite time of the answer path.
// Target: ingress at least 0.5× the bare baseline under a flood, with the
// answer path busy on the same connection. Its own PrepareStmt mode would
// run the statements past the gate.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]cachedStmt
}

type cachedStmt struct {
	st   *sql.Stmt
	rows bool // the text can return rows: not to be run by Exec
}

// maxStmtParams: texts with more parameters are IN lists (one text per
// length), not worth a place in the cache.
const maxStmtParams = 32

// stmtKind says whether query is a single data statement with few
// parameters (cacheable: Prepare compiles only the first of several
// statements, and DDL runs once) and whether it can return rows. A statement
// run by Exec must not return rows: mattn's Exec leaves such a statement
// unfinished (not reset), and a cached one would then hold its read
// snapshot, or its write, until it is next used. No allocation: it runs for
// every text not in the cache yet.
func stmtKind(query string) (ok, rows bool) {
	if strings.ContainsRune(query, ';') || len(query) < 6 || strings.Count(query, "?") > maxStmtParams {
		return false, false
	}
	verb := query[:6]
	rows = strings.EqualFold(verb, "SELECT") ||
		strings.Contains(query, "RETURNING") || strings.Contains(query, "returning")
	for _, v := range []string{"SELECT", "INSERT", "UPDATE", "DELETE"} {
		if strings.EqualFold(verb, v) {
			return true, rows
		}
	}
	return false, rows
}

// cacheable: query may be cached for a run by Exec (exec) or by Query.
func cacheable(query string, exec bool) bool {
	ok, rows := stmtKind(query)
	return ok && !(exec && rows)
}

// lookup returns the prepared statement of query, run by Exec or not, or
// nil and whether it could be prepared (cacheable and room left).
func (c *stmtCache) lookup(query string, exec bool) (*sql.Stmt, bool) {
	c.mu.Lock()
	e, hit := c.m[query]
	room := len(c.m) < maxCachedStmts
	c.mu.Unlock()
	if hit {
		if exec && e.rows {
			return nil, false
		}
		return e.st, true
	}
	return nil, room && cacheable(query, exec)
}

// prepared returns the prepared statement of query, preparing it if there
// is room; nil if not (or if preparing failed: the caller then runs the
// query unprepared and reports its error). The caller holds the gate and no
// transaction.
func (c *stmtCache) prepared(ctx context.Context, db *sql.DB, query string, exec bool) *sql.Stmt {
	st, ok := c.lookup(query, exec)
	if st != nil || !ok {
		return st
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[query]; ok { // prepared meanwhile (a transaction's end)
		st.Close()
		return old.st
	}
	if c.m == nil {
		c.m = make(map[string]cachedStmt)
	}
	_, rows := stmtKind(query)
	c.m[query] = cachedStmt{st: st, rows: rows}
	return st
}

// close closes the prepared statements.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, e := range c.m {
		e.st.Close()
		delete(c.m, q)
	}
}
