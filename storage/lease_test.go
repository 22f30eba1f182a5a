package storage

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestUserLeases(t *testing.T) { eachDriver(t, testUserLeases) }

func testUserLeases(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	u := UserRef{Bot: "b", UserID: "u"}
	claim := func(owner string, ttl time.Duration) bool {
		t.Helper()
		ok, err := db.ClaimUser(ctx, u, owner, clk.Now().Add(ttl))
		must(t, err)
		return ok
	}
	if !claim("A", 10*time.Second) {
		t.Fatal("a free user could not be claimed")
	}
	if claim("B", 10*time.Second) {
		t.Fatal("B claimed a user A holds")
	}
	if !claim("A", 10*time.Second) {
		t.Fatal("A could not renew its own lease")
	}
	clk.Advance(11 * time.Second) // A died: its lease runs out
	if !claim("B", 10*time.Second) {
		t.Fatal("B could not take over an expired lease")
	}
	if claim("A", 10*time.Second) {
		t.Fatal("A, back from the dead, took the lease B holds")
	}

	// Release only when nothing is pending, and only by the owner.
	m := insertMsg(t, db, "b", "u", "k1")
	if ok, err := db.ReleaseUser(ctx, u, "B"); err != nil || ok {
		t.Fatalf("released with a message pending: %v %v", ok, err)
	}
	if got, err := db.PendingMessages(ctx, u, 1); err != nil || len(got) != 1 || got[0].ID != m.ID {
		t.Fatalf("PendingMessages = %+v %v", got, err)
	}
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "b", UserID: "u", Parts: []string{"hi"}}))
	if got, err := db.PendingMessages(ctx, u, 1); err != nil || len(got) != 0 {
		t.Fatalf("a message with its answer in the outbox is still pending: %+v %v", got, err)
	}
	if ok, err := db.ReleaseUser(ctx, u, "A"); err != nil || ok {
		t.Fatalf("A released B's lease: %v %v", ok, err)
	}
	if ok, err := db.ReleaseUser(ctx, u, "B"); err != nil || !ok {
		t.Fatalf("B could not release: %v %v", ok, err)
	}
	if !claim("A", 10*time.Second) {
		t.Fatal("a released user could not be claimed")
	}
	must(t, db.DropUserLease(ctx, u, "A"))
	if !claim("C", 10*time.Second) {
		t.Fatal("a dropped lease still held the user")
	}
	must(t, db.DropLeases(ctx, "nobody"))
	if !claim("D", 10*time.Second) {
		t.Fatal("DropLeases left a lease")
	}
}

func TestUnclaimedUsers(t *testing.T) { eachDriver(t, testUnclaimedUsers) }

func testUnclaimedUsers(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	unclaimed := func(after int64, limit int) ([]UserRef, int64) {
		t.Helper()
		users, next, err := db.UnclaimedUsers(ctx, clk.Now(), after, limit)
		must(t, err)
		return users, next
	}
	x1 := insertMsg(t, db, "b", "x", "k1")
	y2 := insertMsg(t, db, "b", "y", "k2")
	insertMsg(t, db, "b", "x", "k3")
	z := insertMsg(t, db, "b", "z", "k4")
	must(t, db.SetMessageState(ctx, z.ID, MessageAnswered, "")) // nothing pending for z
	ok, err := db.ClaimUser(ctx, UserRef{"b", "y"}, "A", clk.Now().Add(5*time.Second))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if got, next := unclaimed(0, 10); len(got) != 1 || got[0] != (UserRef{"b", "x"}) || next != 0 {
		t.Fatalf("unclaimed %+v (next %d), want only x (y is leased, z has nothing pending), and no more", got, next)
	}
	clk.Advance(6 * time.Second) // A's lease on y expired
	if got, _ := unclaimed(0, 10); len(got) != 2 || got[0].UserID != "x" || got[1].UserID != "y" {
		t.Fatalf("unclaimed %+v, want x then y (oldest pending first)", got)
	}
	if got, next := unclaimed(0, 1); len(got) != 1 || got[0].UserID != "x" || next != x1.ID {
		t.Fatalf("limit 1: %+v (next %d), want x and next %d", got, next, x1.ID)
	}
	// Pending in another state (answering, its answer lost) and older than
	// every received message: its user comes first.
	w := insertMsg(t, db, "b", "w", "k5")
	must(t, db.SetMessageState(ctx, w.ID, MessageAnswering, ""))
	must(t, db.SetMessageState(ctx, x1.ID, MessageAnswering, ""))
	if got, _ := unclaimed(0, 10); len(got) != 3 || got[0].UserID != "x" || got[1].UserID != "y" || got[2].UserID != "w" {
		t.Fatalf("unclaimed %+v, want x, y, w (by their oldest pending message, whatever its state)", got)
	}
	// Pages of two messages: x1 (answering) and y2, then x3 and w (answering,
	// after the last received one), then nothing.
	got, next := unclaimed(0, 2)
	if len(got) != 2 || got[0].UserID != "x" || got[1].UserID != "y" || next != y2.ID {
		t.Fatalf("page 1: %+v (next %d), want x, y and next %d", got, next, y2.ID)
	}
	got, next = unclaimed(next, 2)
	if len(got) != 2 || got[0].UserID != "x" || got[1].UserID != "w" || next != w.ID {
		t.Fatalf("page 2: %+v (next %d), want x, w and next %d", got, next, w.ID)
	}
	if got, next = unclaimed(next, 2); len(got) != 0 || next != 0 {
		t.Fatalf("page 3: %+v (next %d), want none", got, next)
	}
}

func TestPendingMessages(t *testing.T) { eachDriver(t, testPendingMessages) }

// testPendingMessages: a user's pending messages, oldest first, up to the
// limit; those of other users, answered ones and those whose answer waits
// in the outbox left out; one cut off while streaming kept.
func testPendingMessages(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	u := UserRef{Bot: "b", UserID: "u"}
	ids := func(ms []Message) []int64 {
		var out []int64
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	if got, err := db.PendingMessages(ctx, u, 16); err != nil || len(got) != 0 {
		t.Fatalf("nothing stored: %+v %v", got, err)
	}
	answered := insertMsg(t, db, "b", "u", "k1")
	answer(t, db, answered) // no parts: answered
	inOutbox := insertMsg(t, db, "b", "u", "k2")
	answer(t, db, inOutbox, "part")
	streamed := insertMsg(t, db, "b", "u", "k3")
	must(t, db.AppendParts(ctx, streamed.ID, "b", "u", []string{"first"}))
	insertMsg(t, db, "b", "other", "k4")
	insertMsg(t, db, "other", "u", "k5")
	a := insertMsg(t, db, "b", "u", "k6")
	b := insertMsg(t, db, "b", "u", "k7")

	got, err := db.PendingMessages(ctx, u, 16)
	must(t, err)
	if want := []int64{streamed.ID, a.ID, b.ID}; fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Fatalf("PendingMessages = %v, want %v", ids(got), want)
	}
	if got[0].State != MessageStreaming || got[1].State != MessageReceived || got[1].Content != a.Content {
		t.Errorf("PendingMessages = %+v", got)
	}
	got, err = db.PendingMessages(ctx, u, 2)
	must(t, err)
	if want := []int64{streamed.ID, a.ID}; fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Errorf("limit 2: %v, want %v", ids(got), want)
	}
}

// BenchmarkPendingMessagesLongHistory: a user with 3,000 answered messages and
// one pending; the cost must not grow with the history.
func BenchmarkPendingMessagesLongHistory(b *testing.B) {
	db, err := Open(b.Context(), Config{DSN: filepath.Join(b.TempDir(), "x.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for i := range 3000 {
		m := &Message{Bot: "b", DedupeKey: fmt.Sprint(i), UserID: "u", MsgType: "text", Content: "hi"}
		if _, err := db.InsertMessage(b.Context(), m); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.db.Exec("UPDATE messages SET state = ?", MessageAnswered).Error; err != nil {
		b.Fatal(err)
	}
	pending := &Message{Bot: "b", DedupeKey: "last", UserID: "u", MsgType: "text", Content: "hi"}
	if _, err := db.InsertMessage(b.Context(), pending); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		got, err := db.PendingMessages(b.Context(), UserRef{Bot: "b", UserID: "u"}, 16)
		if err != nil || len(got) != 1 || got[0].ID != pending.ID {
			b.Fatalf("PendingMessages: %v %+v, want message %d", err, got, pending.ID)
		}
	}
}
