package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
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

// TestIngestStats: a batch that finds the connection held by another
// statement counts the wait; one that finds it free counts none.
func TestIngestStats(t *testing.T) {
	db, _ := newDB(t)
	insert := func(key string) {
		t.Helper()
		if _, err := db.InsertMessage(t.Context(), &Message{Bot: "b", DedupeKey: key, UserID: "u", MsgType: "text"}); err != nil {
			t.Fatal(err)
		}
	}
	insert("free")
	s, ok := db.IngestStats()
	if !ok {
		t.Fatal("SQLite reports no ingest stats")
	}
	if s.Batches != 1 || s.Waited > 50*time.Millisecond || s.Wrote <= 0 {
		t.Fatalf("after one insert on a free connection: %+v", s)
	}
	db.gate.acquire(false) // the answer path holds the connection
	const hold = 100 * time.Millisecond
	time.AfterFunc(hold, db.gate.release)
	insert("held")
	s2, _ := db.IngestStats()
	if s2.Batches != 2 || s2.Waited-s.Waited < hold/2 || s2.Wrote <= s.Wrote {
		t.Fatalf("after an insert that waited %v for the connection: %+v, was %+v", hold, s2, s)
	}
}
