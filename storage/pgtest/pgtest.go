// Package pgtest runs a throwaway PostgreSQL server for tests: one server per
// test binary, started on first use, and a fresh database for every caller of
// Start, so that tests stay isolated without paying for a server each.
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.Start(t) // skips (or fails, see below) without Postgres
//		…
//	}
//
// The server binaries (initdb, postgres) are looked for in $PGTEST_BINDIR
// (only there, when it is set), next to the postgres on PATH, in `pg_config --bindir` and in
// /usr/lib/postgresql/*/bin, the newest version first; Debian's postgresql
// package puts them there. Without them Start skips the test with a loud
// message, unless WECOMBOT_REQUIRE_POSTGRES=1, when it fails it (CI).
//
// The server keeps its data in a temporary folder, listens on a free port of
// 127.0.0.1 (and a socket in that folder), runs without fsync and trusts
// every local connection. Postgres refuses to run as root: under root it runs
// as the user postgres, or nobody. It gets SIGQUIT when the test binary dies,
// and Main stops it and removes its folder.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/wecombot/wecombot/internal/eventually"
)

// RequireEnv is the environment variable that turns a missing server into a
// test failure instead of a skip.
const RequireEnv = "WECOMBOT_REQUIRE_POSTGRES"

// NoServer is the skip message when no server binary is found.
const NoServer = "postgres: no server binary found (install Debian's postgresql); the Postgres storage tests did NOT run"

// errNoServer marks the absence of binaries (a skip), as opposed to a server
// that was found but failed (a failure).
var errNoServer = errors.New(NoServer)

var (
	mu      sync.Mutex
	srv     *server
	srvErr  error // the first start's error, repeated to every later caller
	skipped atomic.Bool
	dbSeq   atomic.Int64
)

// Main runs the tests of m and then stops the server if one was started. Use
// it as TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	s := srv
	srv = nil
	mu.Unlock()
	if s != nil {
		s.stop()
	}
	if skipped.Load() {
		fmt.Fprintf(os.Stderr, "\n!!! %s\n\n", NoServer)
	}
	return code
}

// Start returns the DSN (key=value form) of a new, empty database on the
// shared server, starting the server on first use.
func Start(t testing.TB) string {
	t.Helper()
	s, err := shared()
	if errors.Is(err, errNoServer) {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s, and %s=1", NoServer, RequireEnv)
		}
		skipped.Store(true)
		t.Skip("!!! " + NoServer)
	}
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := fmt.Sprintf("t_%d", dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// FILE_COPY (Postgres 15 on) copies the template's files: without fsync
	// that is several times faster than the default, which writes the copy
	// to the WAL. Older servers know only the plain form.
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name+" STRATEGY = FILE_COPY"); err != nil {
		if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatalf("postgres: create database %s: %v", name, err)
		}
	}
	return s.dsn(name)
}

func shared() (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if srv == nil && srvErr == nil {
		srv, srvErr = startServer()
	}
	return srv, srvErr
}

type server struct {
	dir     string // removed by stop
	port    int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has ended
	waitErr error         // cmd's exit, valid once exited is closed
	log     string        // the server's log file
	admin   *sql.DB       // connection to the postgres database
}

func (s *server) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", s.port, db)
}

// FindBinDir returns the folder holding initdb and postgres, or "".
func FindBinDir() string {
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
		return "" // as told: lets the skip be tried on a machine with Postgres
	}
	var dirs []string
	if p, err := exec.LookPath("postgres"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgVersion(versions[i]) > pgVersion(versions[j]) })
	dirs = append(dirs, versions...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

// pgVersion is the major version in /usr/lib/postgresql/<v>/bin.
func pgVersion(dir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// runAs returns the credential to run the server under: nil when we are not
// root, else the user postgres (Debian's package creates it) or nobody.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and neither user postgres nor nobody exists")
}

func startServer() (*server, error) {
	bin := FindBinDir()
	if bin == "" {
		return nil, errNoServer
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		// The server's user must own its folder, and reach it.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb (%s): %v\n%s", bin, err, out)
	}
	// A free port can be taken between our probe and the server's bind:
	// try a few.
	var lastErr error
	for range 3 {
		s, err := launch(bin, dir, data, cred)
		if err == nil {
			ok = true
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func launch(bin, dir, data string, cred *syscall.Credential) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, port: port, log: filepath.Join(dir, "postgres.log"), exited: make(chan struct{})}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB",
		"-c", "TimeZone=UTC", "-c", "log_min_messages=warning")
	s.cmd.Dir = dir
	s.cmd.Stdout = logf
	s.cmd.Stderr = logf
	s.cmd.Env = append(os.Environ(), "LC_ALL=C")
	// SIGQUIT (immediate shutdown) if the test binary dies without Main.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	s.admin, err = sql.Open("pgx", s.dsn("postgres"))
	if err != nil {
		s.kill()
		return nil, err
	}
	// The wait is for every test of the binary, which all get its error:
	// a missed deadline is recorded, not fatal to the test that started it.
	var late failure
	var pingErr error
	eventually.Within(&late, startTimeout, func() bool {
		if late.err != nil {
			return true // the deadline passed and was recorded
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pingErr = s.admin.PingContext(ctx)
		cancel()
		select {
		case <-s.exited:
			return true
		default:
			return pingErr == nil
		}
	}, "postgres did not answer")
	select {
	case <-s.exited:
		log, _ := os.ReadFile(s.log)
		s.admin.Close()
		return nil, fmt.Errorf("postgres exited (%v):\n%s", s.waitErr, log)
	default:
	}
	if late.err != nil {
		log, _ := os.ReadFile(s.log)
		s.kill()
		return nil, fmt.Errorf("%v: %v\n%s", late.err, pingErr, log)
	}
	return s, nil
}

// startTimeout bounds the wait for a started server to answer.
const startTimeout = 60 * time.Second

// failure is the eventually.TB of the wait for the server: it keeps the
// failure for launch to return. Its Fatalf does not stop the wait; the
// condition ends it on the next look.
type failure struct{ err error }

func (f *failure) Helper() {}
func (f *failure) Fatalf(format string, args ...any) {
	f.err = fmt.Errorf(format, args...)
}

// kill ends the server at once (immediate shutdown).
func (s *server) kill() { s.shutdown(syscall.SIGQUIT, 10*time.Second) }

// stop shuts the server down (fast shutdown: open sessions are ended) and
// removes its folder.
func (s *server) stop() {
	s.shutdown(syscall.SIGINT, 15*time.Second)
	os.RemoveAll(s.dir)
}

// shutdown sends sig to the server and waits for it to end, killing it
// after grace.
func (s *server) shutdown(sig syscall.Signal, grace time.Duration) {
	if s.admin != nil {
		s.admin.Close()
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(grace):
		s.cmd.Process.Kill()
		<-s.exited
	}
}
