// Package storage keeps the service's durable state: access tokens, inbound
// messages with their dedupe keys, conversations and the outbox of replies.
//
// It is written against GORM with portable SQL only and runs on SQLite (the
// default: one file, no server) and on PostgreSQL (storage.driver: postgres,
// several service instances on one database). Both get the same schema from
// AutoMigrate of the same row structs. It imports no sibling package and
// knows nothing of WeCom or of LLMs: it stores strings and times.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrDropped is an answer to a message dropped while it was answered
// (SaveAnswer): nothing of it is stored.
var ErrDropped = errors.New("storage: the message was dropped while it was answered")

// Config is the `storage:` section of the configuration. Driver is "sqlite"
// (the default; DSN is a file name, or ":memory:") or "postgres" (DSN is a
// libpq URL, postgres://user:pass@host:5432/db?sslmode=disable, or key=value
// pairs, "host=… user=… dbname=…").
type Config struct {
	Driver string `yaml:"driver"`
	DSN    string `yaml:"dsn"`
}

// DB is the service's database. Its methods are safe for concurrent use.
type DB struct {
	db *gorm.DB
	// gate serves SQLite's one connection, the ingest first; nil on
	// Postgres.
	gate *gate
	// stmts are GORM's statements prepared on that connection; nil on
	// Postgres.
	stmts *stmtCache
	// Now is the clock used for the times the storage writes itself
	// (received_at, sent_at…); tests replace it.
	Now func() time.Time

	ingest *ingest
}

// Open opens (and creates, if needed) the database and migrates its schema.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	var dial gorm.Dialector
	var g *gate
	var stmts *stmtCache
	closeConn := func() {} // the *sql.DB opened here, before GORM has it
	switch cfg.Driver {
	case "", "sqlite":
		dsn, err := sqliteDSN(cfg.DSN)
		if err != nil {
			return nil, err
		}
		sqlDB, err := sql.Open(sqlite.DriverName, dsn)
		if err != nil {
			return nil, fmt.Errorf("storage: open: %w", err)
		}
		closeConn = func() { sqlDB.Close() }
		g, stmts = &gate{}, &stmtCache{}
		dial = sqlite.New(sqlite.Config{DSN: dsn, Conn: gatedPool{db: sqlDB, g: g, stmts: stmts}})
	case "postgres":
		if cfg.DSN == "" {
			return nil, errors.New("storage: dsn is empty")
		}
		if _, err := pgx.ParseConfig(cfg.DSN); err != nil {
			return nil, fmt.Errorf("storage: postgres dsn: %w", err)
		}
		dial = postgres.New(postgres.Config{
			DSN:          cfg.DSN,
			OptionOpenDB: []stdlib.OptionOpenDB{stdlib.OptionAfterConnect(scanTimesInUTC)},
		})
	default:
		return nil, fmt.Errorf("storage: unknown driver %q (supported: sqlite, postgres)", cfg.Driver)
	}
	gcfg := &gorm.Config{
		Logger: logger.Discard,
		// Times are written by us in UTC; see utc().
		NowFunc:                func() time.Time { return time.Now().UTC() },
		SkipDefaultTransaction: true,
	}
	gdb, err := gorm.Open(dial, gcfg)
	if err != nil {
		closeConn()
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	sqlDB, err := gdb.DB()
	if err != nil {
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	if cfg.Driver == "postgres" {
		// Postgres runs transactions side by side: a few connections let the
		// ingest's group commit, the outbox and the panel work at once.
		sqlDB.SetMaxOpenConns(10)
		sqlDB.SetMaxIdleConns(10)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		// SQLite allows one writer at a time. One connection serialises our
		// writes in Go instead of failing them with SQLITE_BUSY; WAL keeps
		// readers of other processes (the admin's sqlite3 shell) unblocked.
		// Never use the outer *gorm.DB inside Transaction with this setting:
		// the transaction holds the only connection and the call deadlocks.
		sqlDB.SetMaxOpenConns(1)
		// An in-memory database lives as long as its connection.
		sqlDB.SetConnMaxIdleTime(0)
		sqlDB.SetConnMaxLifetime(0)
	}
	d := &DB{db: gdb, gate: g, stmts: stmts, Now: time.Now}
	if err := d.Ping(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	if err := migrate(ctx, gdb); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("storage: migrate: %w", err)
	}
	if d.ingest, err = newIngest(ctx, d); err != nil {
		sqlDB.Close()
		return nil, err
	}
	return d, nil
}

// migrateLock is the Postgres advisory lock key the migrations take turns on
// ("wecombot" in ASCII).
const migrateLock = 0x77_65_63_6f_6d_62_6f_74

// migrate creates the tables, or adds what they lack. Several instances of
// the service can start at once on one Postgres database; their concurrent
// CREATE TABLEs of one table fail (duplicate key in pg_type), so there each
// migration is one transaction that first waits for an advisory lock. SQLite
// is one file of one process: its AutoMigrate runs as it is.
func migrate(ctx context.Context, gdb *gorm.DB) error {
	models := []any{&tokenRow{}, &messageRow{}, &turnRow{}, &outboxRow{}, &userLeaseRow{}, &aibotStreamRow{}, &kfAccountRow{}, &kfCustomerRow{}, &messageMediaRow{}}
	run := func(tx *gorm.DB) error {
		if err := tx.AutoMigrate(models...); err != nil {
			return err
		}
		// AutoMigrate adds indexes but never drops one.
		for _, name := range supersededIndexes {
			if err := tx.Exec("DROP INDEX IF EXISTS " + name).Error; err != nil {
				return err
			}
		}
		return nil
	}
	if gdb.Dialector.Name() != "postgres" {
		return run(gdb.WithContext(ctx))
	}
	return gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", migrateLock).Error; err != nil {
			return err
		}
		return run(tx)
	})
}

// supersededIndexes were created by earlier versions and are covered by
// newer ones; keeping them would only slow every insert.
var supersededIndexes = []string{
	"idx_messages_user", // (bot, user_id): now the prefix of idx_messages_user_state
}

// sqliteDSN turns the configured file name into a DSN with the pragmas the
// service relies on, creating the file's folder. ":memory:" is kept for tests
// (a private database per Open: the pool keeps its single connection).
func sqliteDSN(dsn string) (string, error) {
	if dsn == "" {
		return "", errors.New("storage: dsn is empty")
	}
	const pragmas = "_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate&_foreign_keys=1"
	if dsn == ":memory:" {
		return "file::memory:?" + pragmas, nil
	}
	path := sqlitePath(dsn)
	if dir := filepath.Dir(path); dir != "." && dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", fmt.Errorf("storage: create folder for %s: %w", path, err)
		}
	}
	if strings.Contains(dsn, "?") {
		return dsn + "&" + pragmas, nil
	}
	return dsn + "?" + pragmas, nil
}

// postgres tells the drivers apart after Open: only SQLite has the gate.
func (d *DB) postgres() bool { return d.gate == nil }

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error {
	sqlDB, err := d.db.DB()
	if err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	return nil
}

// scanTimesInUTC makes pgx return timestamptz values in UTC, as the SQLite
// driver does, instead of in time.Local: the same instant either way, but
// callers then see the same times whatever the driver.
func scanTimesInUTC(_ context.Context, conn *pgx.Conn) error {
	conn.TypeMap().RegisterType(&pgtype.Type{
		Name: "timestamptz", OID: pgtype.TimestamptzOID,
		Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC},
	})
	return nil
}

// Close closes the database; SQLite checkpoints its WAL on the last close.
func (d *DB) Close() error {
	d.ingest.close()
	if d.stmts != nil {
		d.stmts.close()
	}
	sqlDB, err := d.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// now is the storage clock in UTC. SQLite stores times as text with their
// offset, and compares them as text: mixing offsets (TZ=Asia/Shanghai) breaks
// every "older than" query, so every time written goes through utc().
// Postgres stores them as timestamptz (an instant, to the microsecond) and
// compares instants, so there utc() changes nothing but does no harm.
func (d *DB) now() time.Time { return d.Now().UTC() }

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// CheckDSN reports what Open would refuse in c's DSN without opening or
// creating anything: a PostgreSQL DSN that does not parse; a SQLite file
// that is a folder, or whose folder cannot be created because a file
// stands in its path. Problems that depend on the moment (permissions, a
// server down) are Open's.
func (c Config) CheckDSN() error {
	switch c.Driver {
	case "postgres":
		if _, err := pgx.ParseConfig(c.DSN); err != nil {
			return err
		}
	case "", "sqlite":
		path := sqlitePath(c.DSN)
		if path == "" || path == ":memory:" {
			return nil
		}
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			return fmt.Errorf("%s is a folder, not a database file", path)
		}
		for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
			// A folder that does not exist yet is created by Open; a
			// file in the way (ENOTDIR below it) is found going up.
			fi, err := os.Stat(dir)
			if err == nil {
				if !fi.IsDir() {
					return fmt.Errorf("%s is a file, so the folder for %s cannot be created", dir, path)
				}
				return nil
			}
			if parent := filepath.Dir(dir); parent == dir {
				return nil
			}
		}
	}
	return nil
}

// sqlitePath is the file of a SQLite DSN: "data/x.db" of
// "file:data/x.db?mode=rwc".
func sqlitePath(dsn string) string {
	if i := strings.IndexByte(dsn, '?'); i >= 0 {
		dsn = dsn[:i]
	}
	return strings.TrimPrefix(dsn, "file:")
}
