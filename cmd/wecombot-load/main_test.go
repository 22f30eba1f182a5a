package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain serves the baseline when a run under test starts this test
// binary as its own executable (`wecombot-load baseline`), and otherwise
// runs the tests, with a folder for the wecombot binary they build.
func TestMain(m *testing.M) {
	if os.Getenv(loadChildEnv) == "1" && len(os.Args) > 1 && os.Args[1] == baselineCommand {
		main()
	}
	dir, err := os.MkdirTemp("", "wecombot-load-test-")
	if err != nil {
		panic(err)
	}
	product.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// product is the wecombot executable the tests measure, built once per test
// binary as it ships (Dockerfile, README): with the nomsgpack tag.
var product struct {
	dir  string
	once sync.Once
	path string
	err  error
}

func wecombotBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the wecombot binary")
	}
	product.once.Do(func() {
		path := filepath.Join(product.dir, "wecombot")
		out, err := exec.Command("go", "build", "-tags", "nomsgpack", "-o", path, "../wecombot").CombinedOutput()
		if err != nil {
			product.err = fmt.Errorf("go build ../wecombot: %v\n%s", err, out)
			return
		}
		product.path = path
	})
	if product.err != nil {
		t.Fatal(product.err)
	}
	return product.path
}

func TestParseLoadFlags(t *testing.T) {
	o, err := parseLoadFlags([]string{
		"-wecombot", "/opt/wecombot", "-rate", "0", "-duration", "10s", "-then-rate", "1000", "-then-duration", "10s", "-messages", "4000",
		"-llm-latency", "5s", "-llm-rate", "10", "-llm-retry-after", "2s", "-max-concurrency", "50",
		"-users", "300", "-senders", "16", "-drain", "90s", "-settle", "1s",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := loadOptions{Binary: "/opt/wecombot", Rate: 0, Duration: 10 * time.Second, ThenRate: 1000, ThenDuration: 10 * time.Second, Messages: 4000,
		LLMLatency: 5 * time.Second, LLMRate: 10, LLMRetryAfter: 2 * time.Second, MaxConcurrency: 50,
		Users: 300, Senders: 16, Drain: 90 * time.Second, Settle: time.Second, SampleEvery: 10 * time.Second, Log: io.Discard}
	if o != want {
		t.Errorf("parsed %+v\nwant   %+v", o, want)
	}
	if p := o.phases(); len(p) != 2 || p[1] != (loadPhase{Rate: 1000, Duration: 10 * time.Second}) {
		t.Errorf("phases %+v", p)
	}
	o, err = parseLoadFlags([]string{"-soak", "1m", "-rate", "10", "-sample", "5s"}, io.Discard)
	if err != nil || o.Soak != time.Minute || o.SampleEvery != 5*time.Second {
		t.Errorf("soak: %+v, %v", o, err)
	}
	if o, _ := parseLoadFlags(nil, io.Discard); len(o.phases()) != 1 || o.LLMRetryAfter != time.Second || o.MaxConcurrency != 0 || o.Binary != "" {
		t.Errorf("defaults: %+v", o)
	}
}

func TestLoadCommandFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-users", "0"},
		{"-service", "http://127.0.0.1:1"},
		{"-soak", "1m"}, // without a steady rate
		{"-soak", "1m", "-rate", "10", "-sample", "0s"},
		{"-settle", "-1s"},
		{"-workers", "16"},
		{"-max-concurrency", "-1"},
		{"-llm-rate", "-1"},
		{"-llm-retry-after", "-1s"},
		{"-then-rate", "100"}, // without -then-duration
		{"-then-duration", "-1s"},
		{"-messages", "-1"},
		{"-messages", "2000000"},
		{"-soak", "1m", "-rate", "10", "-then-duration", "10s"},
		{"load", "-users", "10"}, // not a subcommand: the flags after it would go unread
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2; stderr %s", args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, io.Discard, &stderr); code != 0 || !strings.Contains(stderr.String(), "-wecombot") {
		t.Errorf("-h: exit %d, want 0 and the flags; stderr %s", code, stderr.String())
	}
}
