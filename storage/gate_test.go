package storage

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// The ingest's turn comes before every waiting answer-path statement, and
// waiters of one priority go in arrival order.
func TestGateHighPriorityFirst(t *testing.T) {
	g := &gate{}
	g.acquire(false) // a statement in progress
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	queued := func(high, low int) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g.mu.Lock()
			h, l := len(g.high), len(g.low)
			g.mu.Unlock()
			if h == high && l == low {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiters %d high, %d low; want %d, %d", h, l, high, low)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait := func(name string, high bool) {
		wg.Go(func() {
			g.acquire(high)
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			g.release()
		})
	}
	wait("low1", false)
	queued(0, 1)
	wait("low2", false)
	queued(0, 2)
	wait("high1", true)
	queued(1, 2)
	wait("high2", true)
	queued(2, 2)
	g.release()
	wg.Wait()
	if got := fmt.Sprint(order); got != "[high1 high2 low1 low2]" {
		t.Fatalf("order %s", got)
	}
	g.acquire(true) // free again: no wait
	g.release()
}
