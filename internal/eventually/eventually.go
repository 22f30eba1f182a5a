// Package eventually is the tests' one polling helper: for the conditions
// that only another process, a real server or the network decides (a child
// process's log, a browser's page, a real Redis), where neither
// testing/synctest nor an injected clock can decide time. It must not be
// used where those can.
package eventually

import (
	"fmt"
	"time"
)

// Timeout is how long True waits by default: long enough for a loaded CI
// machine, short enough that a hung test says why.
const Timeout = 10 * time.Second

// interval is the pause between two looks.
const interval = 5 * time.Millisecond

// TB is the part of testing.TB that True uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// True looks at cond until it holds, for up to Timeout, and fails the test
// with what (formatted with args) if it never does.
func True(t TB, cond func() bool, what string, args ...any) {
	t.Helper()
	Within(t, Timeout, cond, what, args...)
}

// Within is True with its own timeout.
func Within(t TB, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, fmt.Sprintf(what, args...))
		}
		time.Sleep(interval)
	}
}
