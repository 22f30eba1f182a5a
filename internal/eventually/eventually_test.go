package eventually

import (
	"fmt"
	"testing"
	"time"
)

type recorder struct{ failed string }

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	var r recorder
	True(&r, func() bool { n++; return n == 3 }, "never")
	if r.failed != "" || n != 3 {
		t.Fatalf("looked %d times, failure %q; want 3 looks and no failure", n, r.failed)
	}
}

func TestWithinFailsWithTheMessage(t *testing.T) {
	var r recorder
	// Fatalf of the recorder does not stop the loop: one failing look past
	// the deadline is enough, so the condition stops it after reporting.
	Within(&r, time.Millisecond, func() bool { return r.failed != "" }, "queue has %d", 7)
	if want := "after 1ms: queue has 7"; r.failed != want {
		t.Fatalf("failure %q, want %q", r.failed, want)
	}
}
