package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The service and the baseline get the shipped image's collector settings
// unless the caller's environment sets them, and always the child mark.
func TestChildEnv(t *testing.T) {
	env, gc := childEnv([]string{"HOME=/root", "PATH=/bin"})
	for _, want := range []string{"HOME=/root", "PATH=/bin", loadChildEnv + "=1", "GOGC=400", "GOMEMLIMIT=128MiB"} {
		if !slices.Contains(env, want) {
			t.Errorf("child environment %q lacks %s", env, want)
		}
	}
	if want := []string{"GOGC=400", "GOMEMLIMIT=128MiB"}; !slices.Equal(gc, want) {
		t.Errorf("reported %q, want %q", gc, want)
	}

	caller := []string{"GOGC=off", "GOMEMLIMIT=", "GOMEMLIMIT=1GiB"}
	env, gc = childEnv(caller)
	if lookupEnv(env, "GOGC") != "off" || lookupEnv(env, "GOMEMLIMIT") != "1GiB" {
		t.Errorf("the caller's settings are not the child's: %q", env)
	}
	if want := []string{"GOGC=off (from the environment)", "GOMEMLIMIT=1GiB (from the environment)"}; !slices.Equal(gc, want) {
		t.Errorf("reported %q, want %q", gc, want)
	}
	if !slices.Equal(caller, []string{"GOGC=off", "GOMEMLIMIT=", "GOMEMLIMIT=1GiB"}) {
		t.Errorf("the caller's environment changed: %q", caller)
	}

	// An empty value is unset, as the Go runtime reads it.
	if env, _ := childEnv([]string{"GOGC="}); lookupEnv(env, "GOGC") != "400" {
		t.Errorf("GOGC= in the caller's environment: the child gets %q", lookupEnv(env, "GOGC"))
	}
}

func TestFindWecombot(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "wecombot")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findWecombot(bin); err != nil || got != bin {
		t.Errorf("-wecombot %s: %q, %v", bin, got, err)
	}
	t.Setenv("PATH", dir)
	if got, err := findWecombot(""); err != nil || got != bin {
		t.Errorf("on PATH: %q, %v; want %s", got, err, bin)
	}
	if _, err := findWecombot(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "-wecombot "+filepath.Join(dir, "missing")) {
		t.Errorf("a missing -wecombot: %v", err)
	}

	// Neither beside this executable (the test binary's folder) nor on PATH.
	t.Setenv("PATH", t.TempDir())
	_, err := findWecombot("")
	if err == nil || !strings.Contains(err.Error(), "-wecombot") || !strings.Contains(err.Error(), "go build") {
		t.Fatalf("no wecombot anywhere: %v; want how to get one", err)
	}
	if _, err := runLoad(context.Background(), loadOptions{Users: 1, Senders: 1, Duration: 1}); err == nil || !strings.Contains(err.Error(), "no wecombot executable") {
		t.Errorf("a run without a wecombot executable: %v", err)
	}
}
