package pgtest

import (
	"database/sql"
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// Each Start is its own empty database on the one server.
func TestStartGivesFreshDatabases(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two Starts gave the same DSN %q", a)
	}
	dba, err := sql.Open("pgx", a)
	if err != nil {
		t.Fatal(err)
	}
	defer dba.Close()
	dbb, err := sql.Open("pgx", b)
	if err != nil {
		t.Fatal(err)
	}
	defer dbb.Close()
	if _, err := dba.ExecContext(t.Context(), "CREATE TABLE x (id int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := dbb.ExecContext(t.Context(), "CREATE TABLE x (id int)"); err != nil {
		t.Fatalf("the second database already has the first one's table: %v", err)
	}
	var who string
	if err := dba.QueryRowContext(t.Context(), "SELECT current_user").Scan(&who); err != nil || who != "postgres" {
		t.Errorf("current_user = %q, %v; want postgres", who, err)
	}
}
