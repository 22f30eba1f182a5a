package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// Concurrent inserts share transactions; every message still gets its own
// answer: new exactly once per dedupe key, with a distinct id, and stored.
func TestIngestGroupsConcurrentInserts(t *testing.T) {
	eachDriver(t, testIngestGroupsConcurrentInserts)
}

func testIngestGroupsConcurrentInserts(t *testing.T) {
	db, err := Open(context.Background(), Config{Driver: driverOf(t), DSN: freshDSN(t)})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 300
	var mu sync.Mutex
	news := map[string]int{}
	ids := map[int64]string{}
	var wg sync.WaitGroup
	for i := range 2 * keys {
		wg.Go(func() {
			key := fmt.Sprintf("msg-%d", i%keys) // every key twice: WeCom's retry
			m := &Message{Bot: "b", DedupeKey: key, UserID: "u", MsgType: "text", Content: key}
			isNew, err := db.InsertMessage(context.Background(), m)
			if err != nil {
				t.Error(err)
				return
			}
			if isNew {
				mu.Lock()
				news[key]++
				if other, dup := ids[m.ID]; dup {
					t.Errorf("id %d given to %s and %s", m.ID, other, key)
				}
				ids[m.ID] = key
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(news) != keys {
		t.Fatalf("%d keys inserted, want %d", len(news), keys)
	}
	for k, n := range news {
		if n != 1 {
			t.Errorf("%s new %d times", k, n)
		}
	}
	for id, key := range ids {
		m, err := db.GetMessage(context.Background(), id)
		if err != nil || m.DedupeKey != key || m.Content != key {
			t.Fatalf("message %d: %+v %v", id, m, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = db.InsertMessage(context.Background(), &Message{Bot: "b", DedupeKey: "late"})
	if !errors.Is(err, errClosed) {
		t.Fatalf("insert after close: %v", err)
	}
}
