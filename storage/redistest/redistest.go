// Package redistest runs a throwaway Redis for one test: a real redis-server
// on a free port of 127.0.0.1 when one is on PATH (.ci/run installs it),
// miniredis otherwise. Under CI (CI set) a missing redis-server fails the
// test instead: CI must run against a real Redis.
//
//	srv := redistest.Start(t)
//	rc := storage.OpenRedis(srv.Addr)
//
// The server goes away when the test ends. It does not import storage, so
// that storage's own tests can use it.
package redistest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/wecombot/wecombot/internal/eventually"
)

// Server is one test's Redis.
type Server struct {
	// Kind is "redis-server" or "miniredis", for the tests' logs.
	Kind string
	// Addr is host:port.
	Addr string

	t  testing.TB
	mr *miniredis.Miniredis // nil for a redis-server

	bin, port, dir string
	mu             sync.Mutex
	cmd            *exec.Cmd // the running redis-server, nil when stopped
	out            bytes.Buffer
}

// Start starts a Redis for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server is not on PATH; CI must run the tests against a real Redis (.ci/run installs it)")
		}
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mr.Close)
		t.Logf("redis: miniredis at %s (no redis-server on PATH)", mr.Addr())
		return &Server{Kind: "miniredis", Addr: mr.Addr(), t: t, mr: mr}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	s := &Server{Kind: "redis-server", Addr: "127.0.0.1:" + port, t: t, bin: bin, port: port, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Stop)
	t.Logf("redis: %s %s at %s", s.Kind, bin, s.Addr)
	return s
}

// start runs redis-server and waits until it answers PING.
func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmd = exec.Command(s.bin, "--port", s.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--loglevel", "warning")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		s.t.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	eventually.True(s.t, func() bool { return c.Ping(context.Background()).Err() == nil },
		"redis-server on %s does not answer PING:\n%s", s.Addr, &s.out)
}

// Stop kills the server. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.mr != nil {
		s.mr.Close()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart stops the server and brings it back on the same address, empty,
// as a redis-server without persistence comes back.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if s.mr != nil {
		if err := s.mr.Restart(); err != nil {
			s.t.Fatal(err)
		}
		s.mr.FlushAll()
		return
	}
	s.start()
}

// FastForward lets d of Redis time go by, for keys' TTLs: miniredis is
// fast-forwarded, a real server is waited for. The sleep stays: a real
// server expires keys by its own clock, which no test can move, and a key
// read after its TTL is gone however late the read comes.
func (s *Server) FastForward(d time.Duration) {
	if s.mr != nil {
		s.mr.FastForward(d)
		return
	}
	time.Sleep(d)
}
