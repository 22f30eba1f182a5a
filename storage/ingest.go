package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// maxBatch bounds how many accepted messages share one transaction.
const maxBatch = 256

// errClosed is returned for inserts after Close.
var errClosed = errors.New("storage: database closed")

// ingest is the group commit of inbound messages. Every callback must be
// durable before WeCom hears 200; one transaction (one fsync) per callback
// made SQLite the limit of ingress (BENCHMARKS.md). Callbacks that arrive
// while a transaction commits are written together in the next one: no
// timer, so a lone callback waits for nothing but its own commit.
type ingest struct {
	d      *DB
	sqlDB  *sql.DB
	stmt   *sql.Stmt // the INSERT, prepared once
	reqs   chan *insertReq
	quit   chan struct{}
	done   chan struct{} // closed when loop has returned
	closer sync.Once
}

type insertReq struct {
	row  messageRow
	done chan insertRes
}

type insertRes struct {
	id  int64 // 0: a duplicate
	err error
}

func newIngest(ctx context.Context, d *DB) (*ingest, error) {
	sqlDB, err := d.db.DB()
	if err != nil {
		return nil, fmt.Errorf("storage: ingest: %w", err)
	}
	// One statement prepared once: compiling the INSERT for every message
	// cost as much as running it. On Postgres, RETURNING gives the id of a
	// new row and no row for a duplicate; on SQLite an Exec reports the
	// same (rows affected, last insert id) without the cost of a result set.
	cols := []string{"bot", "dedupe_key", "user_id", "msg_type", "event", "content", "media", "create_time",
		"received_at", "state", "error", "attempts", "answered_at"}
	marks := make([]string, len(cols))
	for i := range marks {
		marks[i] = "?"
		if d.postgres() {
			marks[i] = fmt.Sprintf("$%d", i+1) // pgx numbers its parameters
		}
	}
	returning := ""
	if d.postgres() {
		returning = " RETURNING id"
	}
	stmt, err := sqlDB.PrepareContext(ctx, "INSERT INTO messages ("+strings.Join(cols, ", ")+") VALUES ("+
		strings.Join(marks, ", ")+") ON CONFLICT (bot, dedupe_key) DO NOTHING"+returning)
	if err != nil {
		return nil, fmt.Errorf("storage: ingest: prepare: %w", err)
	}
	g := &ingest{d: d, sqlDB: sqlDB, stmt: stmt, reqs: make(chan *insertReq, maxBatch),
		quit: make(chan struct{}), done: make(chan struct{})}
	go g.loop()
	return g, nil
}

// insert stores row unless its dedupe key exists and returns its id (0 for
// a duplicate). Once handed over, the insert is waited for even if ctx ends:
// the caller must know whether the message was stored.
func (g *ingest) insert(ctx context.Context, row messageRow) (int64, error) {
	r := &insertReq{row: row, done: make(chan insertRes, 1)}
	select {
	case g.reqs <- r:
	case <-g.quit:
		return 0, errClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.id, res.err
	case <-g.done:
		// The send raced with Close and the loop is gone. A request it
		// wrote has its answer buffered already.
		select {
		case res := <-r.done:
			return res.id, res.err
		default:
			return 0, errClosed
		}
	}
}

func (g *ingest) loop() {
	defer close(g.done)
	for {
		var first *insertReq
		select {
		case first = <-g.reqs:
		case <-g.quit:
			g.drain()
			return
		}
		batch := []*insertReq{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		g.write(batch)
	}
}

// drain answers requests that raced with Close.
func (g *ingest) drain() {
	for {
		select {
		case r := <-g.reqs:
			r.done <- insertRes{err: errClosed}
		default:
			return
		}
	}
}

// write stores a batch in one transaction. If the transaction fails, each
// message is retried alone, so one bad row fails only its own callback (which
// answers 500, and WeCom retries it).
func (g *ingest) write(batch []*insertReq) {
	ids, err := g.writeTx(batch)
	if err == nil {
		for i, r := range batch {
			r.done <- insertRes{id: ids[i]}
		}
		return
	}
	if len(batch) == 1 {
		r := batch[0]
		r.done <- insertRes{err: fmt.Errorf("storage: insert message %s/%s: %w", r.row.Bot, r.row.DedupeKey, err)}
		return
	}
	for _, r := range batch {
		g.write([]*insertReq{r})
	}
}

// writeTx stores batch in one transaction; ids[i] is 0 for a duplicate.
// On SQLite it passes the connection's gate with high priority.
func (g *ingest) writeTx(batch []*insertReq) (ids []int64, err error) {
	if g.d.gate != nil {
		g.d.gate.acquire(true)
		defer g.d.gate.release()
	}
	ctx := context.Background() // a callback that gave up still gets its row stored
	tx, err := g.sqlDB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt := tx.StmtContext(ctx, g.stmt)
	ids = make([]int64, len(batch))
	for i, r := range batch {
		m := r.row
		args := []any{m.Bot, m.DedupeKey, m.UserID, m.MsgType, m.Event, m.Content, m.Media, m.CreateTime,
			m.ReceivedAt, m.State, m.Error, m.Attempts, m.AnsweredAt}
		if g.d.postgres() { // INSERT … RETURNING id
			if err := stmt.QueryRowContext(ctx, args...).Scan(&ids[i]); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, err
			}
			continue
		}
		res, err := stmt.ExecContext(ctx, args...)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			continue // a duplicate
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return nil, err
		}
	}
	return ids, tx.Commit()
}

func (g *ingest) close() {
	g.closer.Do(func() {
		close(g.quit)
		<-g.done
		g.stmt.Close()
	})
}
