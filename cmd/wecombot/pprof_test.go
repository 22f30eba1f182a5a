package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// server.pprof_addr serves the profiler on a listener of its own; without
// it the profiler is nowhere, the service's own address included.
func TestPprofOnItsOwnListener(t *testing.T) {
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}}})

	off := prepareEnv(t, sim.Handler(), respond)
	off.start()
	if off.m.PprofAddr != "" {
		t.Fatalf("PprofAddr %q without server.pprof_addr", off.m.PprofAddr)
	}
	if code, _ := get("http://" + off.m.Addr + "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("the service's address serves /debug/pprof/: %d", code)
	}

	on := prepareEnv(t, sim.Handler(), respond)
	cfg := on.config()
	cfg.Server.PprofAddr = "127.0.0.1:0"
	m := NewMain(cfg, io.Discard)
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.PprofAddr == "" || m.PprofAddr == m.Addr {
		t.Fatalf("PprofAddr %q, service %q", m.PprofAddr, m.Addr)
	}
	if code, body := get("http://" + m.PprofAddr + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("profiler index: %d %.200s", code, body)
	}
	if code, _ := get("http://" + m.Addr + "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("the service's address serves /debug/pprof/ too: %d", code)
	}
	addr := m.PprofAddr
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
		t.Fatal("the profiler still answers after Close")
	}
}
