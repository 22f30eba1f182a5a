package storage

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestPrune(t *testing.T) { eachDriver(t, testPrune) }

func testPrune(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()

	// Old: received at t0.
	answered := insertMsg(t, db, "bot", "u1", "answered")
	answer(t, db, answered, "a1", "a2")
	sendAll(t, db, "a1", "a2")
	silent := insertMsg(t, db, "bot", "u1", "silent") // answered without parts
	must(t, db.SaveAnswer(ctx, Answer{MessageID: silent.ID, Bot: "bot", UserID: "u1"}))
	failed := insertMsg(t, db, "bot", "u2", "failed")
	answer(t, db, failed, "f1", "f2")
	must(t, db.FailPart(ctx, partID(t, db, "f1"), "wecom: 40001"))
	ignored := insertMsg(t, db, "bot", "u2", "ignored")
	must(t, db.SetMessageState(ctx, ignored.ID, MessageIgnored, ""))
	unanswered := insertMsg(t, db, "bot", "u3", "unanswered") // received, never answered
	answering := insertMsg(t, db, "bot", "u3", "answering")   // its answer waits in the outbox
	must(t, db.StartAnswer(ctx, answering.ID))
	answer(t, db, answering, "p1")
	notice := insertMsg(t, db, "bot", "u4", "notice") // failure notice not yet sent
	must(t, db.SaveAnswer(ctx, Answer{MessageID: notice.ID, Bot: "bot", UserID: "u4", Parts: []string{"sorry"}, Failure: "llm down"}))
	must(t, db.EnqueueText(ctx, "bot", "u5", []string{"admin-sent"}))
	sendAll(t, db, "admin-sent")
	must(t, db.EnqueueText(ctx, "bot", "u6", []string{"admin-pending"}))

	// Recent: two days later.
	clk.Advance(48 * time.Hour)
	recent := insertMsg(t, db, "bot", "u1", "recent")
	answer(t, db, recent, "r1")
	sendAll(t, db, "r1")

	res, err := db.Prune(ctx, clk.now.Add(-24*time.Hour))
	must(t, err)
	// Messages: answered, silent, failed, ignored. Parts: a1, a2, f1, f2,
	// admin-sent. Turns: the pairs of answered, failed and answering (old).
	if want := (PruneResult{Messages: 4, Outbox: 5, Turns: 6}); res != want {
		t.Errorf("Prune = %+v, want %+v", res, want)
	}
	for _, m := range []Message{answered, silent, failed, ignored} {
		if _, err := db.GetMessage(ctx, m.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("message %s: GetMessage err = %v, want ErrNotFound", m.DedupeKey, err)
		}
		if parts, err := db.PartsOf(ctx, m.ID); err != nil || len(parts) != 0 {
			t.Errorf("message %s: parts %+v, %v; want none", m.DedupeKey, parts, err)
		}
	}
	for _, m := range []Message{unanswered, answering, notice, recent} {
		if _, err := db.GetMessage(ctx, m.ID); err != nil {
			t.Errorf("message %s was deleted (%v); want it kept", m.DedupeKey, err)
		}
	}
	for _, c := range []string{"p1", "sorry", "admin-pending", "r1"} {
		partID(t, db, c) // fails unless exactly one
	}
	if got := message(t, db, unanswered.ID); got.State != MessageReceived {
		t.Errorf("unanswered message: state %q, want received", got.State)
	}
	// The unanswered message is still resumed at the next start.
	un, err := db.UnansweredMessages(ctx)
	must(t, err)
	if len(un) != 1 || un[0].ID != unanswered.ID {
		t.Errorf("UnansweredMessages = %+v, want only %d", un, unanswered.ID)
	}
	// Old turns are gone, recent ones kept.
	h, err := db.History(ctx, "bot", "u1", 10)
	must(t, err)
	if got, want := contents(h), "u:q recent a:r1"; got != want {
		t.Errorf("history of u1 = %q, want %q", got, want)
	}
	if h, err := db.History(ctx, "bot", "u3", 10); err != nil || len(h) != 0 {
		t.Errorf("history of u3 = %+v, %v; want empty", h, err)
	}
	// A kept message still dedupes; a pruned key is new again (WeCom's
	// retries are long over by then).
	dup := Message{Bot: "bot", DedupeKey: "unanswered", UserID: "u3", MsgType: "text"}
	if ok, err := db.InsertMessage(ctx, &dup); err != nil || ok {
		t.Errorf("re-insert of a kept key = %v, %v; want false", ok, err)
	}
	again := Message{Bot: "bot", DedupeKey: "answered", UserID: "u1", MsgType: "text"}
	if ok, err := db.InsertMessage(ctx, &again); err != nil || !ok {
		t.Errorf("re-insert of a pruned key = %v, %v; want true", ok, err)
	}

	// Nothing more to do.
	res, err = db.Prune(ctx, clk.now.Add(-24*time.Hour))
	must(t, err)
	if res != (PruneResult{}) {
		t.Errorf("second Prune = %+v, want nothing", res)
	}
}

// TestPruneBatches deletes more rows than one batch holds.
func TestPruneBatches(t *testing.T) { eachDriver(t, testPruneBatches) }

func testPruneBatches(t *testing.T) {
	db, clk := newDB(t)
	const n = 2*pruneBatch + 7
	msgs := make([]messageRow, n)
	turns := make([]turnRow, n)
	for i := range msgs {
		msgs[i] = messageRow{Bot: "bot", DedupeKey: fmt.Sprint(i), UserID: "u", MsgType: "text",
			ReceivedAt: clk.now, State: MessageAnswered}
		turns[i] = turnRow{Bot: "bot", UserID: "u", Role: RoleUser, Content: "x", CreatedAt: clk.now}
	}
	must(t, db.db.CreateInBatches(&msgs, 200).Error)
	must(t, db.db.CreateInBatches(&turns, 200).Error)
	res, err := db.Prune(t.Context(), clk.now.Add(time.Second))
	must(t, err)
	if want := (PruneResult{Messages: n, Turns: n}); res != want {
		t.Errorf("Prune = %+v, want %+v", res, want)
	}
	if left := messageCount(t, db); left != 0 {
		t.Errorf("%d messages left, want 0", left)
	}
}

// TestPruneKeepsTheBoundary keeps what was received exactly at before.
func TestPruneKeepsTheBoundary(t *testing.T) { eachDriver(t, testPruneKeepsTheBoundary) }

func testPruneKeepsTheBoundary(t *testing.T) {
	db, clk := newDB(t)
	m := insertMsg(t, db, "bot", "u", "k")
	must(t, db.SaveAnswer(t.Context(), Answer{MessageID: m.ID, Bot: "bot", UserID: "u"}))
	res, err := db.Prune(t.Context(), clk.now)
	must(t, err)
	if res != (PruneResult{}) {
		t.Errorf("Prune(received_at) = %+v, want nothing", res)
	}
}
