package llm

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestEchoPaced: with a Pace the answer comes in pieces that far apart,
// adding up to Complete's answer; without one, in one piece at once.
func TestEchoPaced(t *testing.T) {
	msgs := []Message{{Role: RoleUser, Content: "你好，流式回复"}}
	whole, err := Echo{}.Complete(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var pieces []string
		var at []time.Duration
		got, err := Echo{Pace: 300 * time.Millisecond}.Stream(t.Context(), msgs, func(d string) error {
			pieces, at = append(pieces, d), append(at, time.Since(start))
			return nil
		})
		if err != nil || got != whole || strings.Join(pieces, "") != whole {
			t.Fatalf("stream %q (%v), pieces %q; want %q", got, err, pieces, whole)
		}
		if len(pieces) != echoPieces || at[0] != 0 || at[len(at)-1] != time.Duration(echoPieces-1)*300*time.Millisecond {
			t.Fatalf("%d pieces at %v", len(pieces), at)
		}

		ctx, cancel := context.WithCancel(t.Context())
		_, err = Echo{Pace: time.Hour}.Stream(ctx, msgs, func(string) error { cancel(); return nil })
		if err != context.Canceled {
			t.Fatalf("cancelled mid-stream: %v", err)
		}
	})
	var n int
	if _, err := (Echo{}).Stream(context.Background(), msgs, func(string) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("unpaced: %d pieces, %v", n, err)
	}
}
