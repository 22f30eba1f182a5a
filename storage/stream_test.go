package storage

import (
	"errors"
	"testing"
)

func TestAppendParts(t *testing.T) { eachDriver(t, testAppendParts) }

// testAppendParts: streamed parts go to the outbox in order whether or not
// the message was marked answering first, the message is then streaming
// (pending, so a crash ends it with the interrupted notice), and a
// message whose delivery failed meanwhile takes no more parts.
func testAppendParts(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	received := insertMsg(t, db, "b", "u", "k1")
	must(t, db.AppendParts(ctx, received.ID, "b", "u", []string{"one", "two"}))
	must(t, db.AppendParts(ctx, received.ID, "b", "u", []string{"three"}))
	if got := message(t, db, received.ID).State; got != MessageStreaming {
		t.Errorf("state after AppendParts = %q, want %q", got, MessageStreaming)
	}
	parts, err := db.PartsOf(ctx, received.ID)
	must(t, err)
	if len(parts) != 3 || parts[0].Content != "one" || parts[2].Content != "three" || parts[2].Seq != 2 {
		t.Errorf("parts = %+v", parts)
	}
	if got, err := db.PendingMessages(ctx, UserRef{"b", "u"}, 16); err != nil || len(got) != 1 || got[0].ID != received.ID {
		t.Errorf("a streaming message is not pending: %+v %v", got, err)
	}

	started := insertMsg(t, db, "b", "v", "k2")
	must(t, db.StartAnswer(ctx, started.ID))
	must(t, db.AppendParts(ctx, started.ID, "b", "v", []string{"one"}))
	must(t, db.FailPart(ctx, firstPart(t, db, started.ID), "delivery failed"))
	if err := db.AppendParts(ctx, started.ID, "b", "v", []string{"two"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AppendParts to a failed message: %v, want ErrNotFound", err)
	}
}

func firstPart(t *testing.T, db *DB, messageID int64) int64 {
	t.Helper()
	parts, err := db.PartsOf(t.Context(), messageID)
	must(t, err)
	if len(parts) == 0 {
		t.Fatalf("message %d has no parts", messageID)
	}
	return parts[0].ID
}
