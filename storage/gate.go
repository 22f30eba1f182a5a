package storage

import (
	"context"
	"database/sql"
	"sync"

	"gorm.io/gorm"
)

// gate hands SQLite's one connection to one caller at a time, callers of
// high priority first. database/sql queues the callers of a busy connection
// in no particular order: under load the ingest of callbacks, which WeCom
// waits for, stood behind every write of the answer path (BENCHMARKS.md:
// p99 ack 47–67 ms at 1,000 callbacks/s). With the gate it waits for the one
// statement or transaction in progress at most.
type gate struct {
	mu        sync.Mutex
	busy      bool
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
	case len(g.high) > 0:
		close(g.high[0])
		g.high = g.high[1:]
	case len(g.low) > 0:
		close(g.low[0])
		g.low = g.low[1:]
	default:
		g.busy = false
	}
}

// gatedPool is the connection pool GORM sees for SQLite: every statement,
// and every transaction from begin to commit, passes the gate after the
// ingest (which does not use GORM: ingest.writeTx). Rows of a
// query are read after the gate is passed on; the next holder then waits in
// database/sql for that moment only.
type gatedPool struct {
	db *sql.DB
	g  *gate
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

func (p gatedPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	p.g.acquire(false)
	defer p.g.release()
	return p.db.ExecContext(ctx, query, args...)
}

func (p gatedPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	p.g.acquire(false)
	defer p.g.release()
	return p.db.QueryContext(ctx, query, args...)
}

func (p gatedPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	p.g.acquire(false)
	defer p.g.release()
	return p.db.QueryRowContext(ctx, query, args...)
}

// BeginTx holds the gate until the transaction ends.
func (p gatedPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	p.g.acquire(false)
	tx, err := p.db.BeginTx(ctx, opts)
	if err != nil {
		p.g.release()
		return nil, err
	}
	return &gatedTx{Tx: tx, g: p.g}, nil
}

func (p gatedPool) GetDBConn() (*sql.DB, error) { return p.db, nil }

type gatedTx struct {
	*sql.Tx
	g    *gate
	once sync.Once
}

func (t *gatedTx) Commit() error {
	err := t.Tx.Commit()
	t.once.Do(t.g.release)
	return err
}

func (t *gatedTx) Rollback() error {
	err := t.Tx.Rollback()
	t.once.Do(t.g.release)
	return err
}
