package storage

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAnswerPath runs the storage calls of one answered message, as
// the pipeline on SQLite (an exclusive database) and the outbox make them,
// on a database that already holds 2,000 users' conversations: store the
// message, read the user's pending messages, read the history, save the
// answer (two turns, one part), claim the part, mark it sent. Each
// sub-benchmark times one of the calls; "answer" times them all but the
// insert.
func BenchmarkAnswerPath(b *testing.B) {
	db, err := Open(b.Context(), Config{DSN: filepath.Join(b.TempDir(), "x.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := b.Context()
	const users = 2000
	seq := 0
	// answer runs one message of user u through every call; record, when
	// set, is given the duration of each.
	answer := func(b *testing.B, u int, record func(call string, d time.Duration)) {
		if record == nil {
			record = func(string, time.Duration) {}
		}
		seq++
		ref := UserRef{Bot: "b", UserID: fmt.Sprintf("user-%d", u)}
		step := func(call string, fn func() error) {
			t0 := time.Now()
			if err := fn(); err != nil {
				b.Fatalf("%s: %v", call, err)
			}
			record(call, time.Since(t0))
		}
		m := &Message{Bot: ref.Bot, DedupeKey: fmt.Sprint("k", seq), UserID: ref.UserID, MsgType: "text", Content: "hello there"}
		step("InsertMessage", func() error { _, err := db.InsertMessage(ctx, m); return err })
		var got Message
		step("PendingMessages", func() error {
			msgs, err := db.PendingMessages(ctx, ref, 16)
			if err == nil && (len(msgs) != 1 || msgs[0].ID != m.ID) {
				err = fmt.Errorf("found %d messages, want message %d", len(msgs), m.ID)
			}
			if len(msgs) > 0 {
				got = msgs[0]
			}
			return err
		})
		step("History", func() error { _, err := db.History(ctx, ref.Bot, ref.UserID, 10); return err })
		step("SaveAnswer", func() error {
			return db.SaveAnswer(ctx, Answer{MessageID: got.ID, Bot: ref.Bot, UserID: ref.UserID,
				UserTurn: m.Content, AssistantTurn: "an answer of a few words", Parts: []string{"an answer of a few words"}})
		})
		var parts []OutboxPart
		step("PartsOf", func() error { var err error; parts, err = db.PartsOf(ctx, got.ID); return err })
		p := parts[len(parts)-1]
		step("ClaimPart", func() error {
			ok, err := db.ClaimPart(ctx, p.ID, p.Attempts, db.now().Add(time.Minute))
			if err == nil && !ok {
				err = fmt.Errorf("part %d not claimed", p.ID)
			}
			return err
		})
		step("MarkSent", func() error { return db.MarkSent(ctx, p.ID, "msg") })
	}
	for i := range 5 * users {
		answer(b, i%users, nil)
	}
	for _, call := range []string{"InsertMessage", "PendingMessages", "History", "SaveAnswer", "ClaimPart", "MarkSent", "answer"} {
		b.Run(call, func(b *testing.B) {
			var total time.Duration
			n := 0
			for b.Loop() {
				answer(b, n%users, func(c string, d time.Duration) {
					if c == call || call == "answer" && c != "InsertMessage" && c != "PartsOf" {
						total += d
					}
				})
				n++
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/call")
		})
	}
}

// BenchmarkDuePartsBacklog reads the outbox's next 64 due parts with 12,000
// pending, 4 for each of 3,000 users: the outbox after a flood of
// callbacks. Its cost must stay that of the 64 parts it returns.
func BenchmarkDuePartsBacklog(b *testing.B) {
	db, err := Open(b.Context(), Config{DSN: filepath.Join(b.TempDir(), "x.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for n := range 4 {
		for u := range 3000 {
			if err := db.EnqueueText(b.Context(), "b", fmt.Sprint("user-", u), []string{fmt.Sprint("part ", n)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	now := db.now().Add(time.Hour)
	for b.Loop() {
		parts, err := db.DueParts(b.Context(), now, 64)
		if err != nil || len(parts) != 64 {
			b.Fatalf("DueParts: %d parts, %v", len(parts), err)
		}
	}
}

// BenchmarkUnclaimedUsersBacklog: a page of the sweeper's read with a
// flood's backlog waiting, 27,000 pending messages of 3,000 users (3,000 answered before
// them), on SQLite's one connection.
func BenchmarkUnclaimedUsersBacklog(b *testing.B) {
	db, err := Open(b.Context(), Config{DSN: filepath.Join(b.TempDir(), "x.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for i := range 30000 {
		m := &Message{Bot: "b", DedupeKey: fmt.Sprint("k", i), UserID: fmt.Sprint("user-", i%3000), MsgType: "text", Content: "hello"}
		if _, err := db.InsertMessage(b.Context(), m); err != nil {
			b.Fatal(err)
		}
		if i < 3000 {
			if err := db.SaveAnswer(b.Context(), Answer{MessageID: m.ID, Bot: "b", UserID: m.UserID, UserTurn: "q", AssistantTurn: "a", Parts: []string{"a"}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	now := db.now()
	for b.Loop() {
		users, _, err := db.UnclaimedUsers(b.Context(), now, 0, 256)
		if err != nil || len(users) == 0 {
			b.Fatalf("UnclaimedUsers: %d users, %v", len(users), err)
		}
	}
}
