package storage

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// dueParts returns the parts DueParts gives at now.
func dueParts(t *testing.T, db *DB, now time.Time) []OutboxPart {
	t.Helper()
	parts, err := db.DueParts(t.Context(), now, 100)
	must(t, err)
	return parts
}

// partID finds the id of the part with content c.
func partID(t *testing.T, db *DB, c string) int64 {
	t.Helper()
	var rows []outboxRow
	must(t, db.db.Where("content = ?", c).Find(&rows).Error)
	if len(rows) != 1 {
		t.Fatalf("%d parts with content %q, want 1", len(rows), c)
	}
	return rows[0].ID
}

func part(t *testing.T, db *DB, c string) OutboxPart {
	t.Helper()
	var rows []outboxRow
	must(t, db.db.Where("id = ?", partID(t, db, c)).Find(&rows).Error)
	return rows[0].part()
}

func sendAll(t *testing.T, db *DB, contents ...string) {
	t.Helper()
	for _, c := range contents {
		must(t, db.MarkSent(t.Context(), partID(t, db, c), "wx-"+c))
	}
}

func TestDuePartsPerUserOrder(t *testing.T) { eachDriver(t, testDuePartsPerUserOrder) }

func testDuePartsPerUserOrder(t *testing.T) {
	db, clk := newDB(t)
	// u asks twice before the first reply is out; v once; w at another bot.
	answer(t, db, insertMsg(t, db, "bot", "u", "u1"), "u1a", "u1b")
	answer(t, db, insertMsg(t, db, "bot", "u", "u2"), "u2a")
	answer(t, db, insertMsg(t, db, "bot", "v", "v1"), "v1a", "v1b")
	answer(t, db, insertMsg(t, db, "other", "u", "w1"), "w1a")

	steps := []struct {
		send string
		want string
	}{
		{"", "[u1a v1a w1a]"},
		{"v1a", "[u1a v1b w1a]"},
		{"u1a", "[u1b v1b w1a]"},
		{"u1b", "[u2a v1b w1a]"}, // u's second message only after the first is out
		{"w1a", "[u2a v1b]"},
		{"u2a", "[v1b]"},
		{"v1b", "[]"},
	}
	for _, s := range steps {
		if s.send != "" {
			sendAll(t, db, s.send)
		}
		if got := fmt.Sprint(due(t, db, clk.now, 100)); got != s.want {
			t.Errorf("after sending %q: DueParts = %s, want %s", s.send, got, s.want)
		}
	}
}

func TestDuePartsNextAttemptAndLimit(t *testing.T) { eachDriver(t, testDuePartsNextAttemptAndLimit) }

func testDuePartsNextAttemptAndLimit(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	answer(t, db, insertMsg(t, db, "bot", "u", "u1"), "u-a", "u-b")
	answer(t, db, insertMsg(t, db, "bot", "v", "v1"), "v-a")
	answer(t, db, insertMsg(t, db, "bot", "w", "w1"), "w-a")

	if got := fmt.Sprint(due(t, db, clk.now.Add(-time.Nanosecond), 100)); got != "[]" {
		t.Errorf("DueParts before the parts were created = %s, want none", got)
	}
	tests := []struct {
		limit int
		want  string
	}{
		{1, "[u-a]"},
		{2, "[u-a v-a]"},
		{3, "[u-a v-a w-a]"},
		{100, "[u-a v-a w-a]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(due(t, db, clk.now, tt.limit)); got != tt.want {
			t.Errorf("DueParts(limit %d) = %s, want %s", tt.limit, got, tt.want)
		}
	}

	// A delayed head holds back the rest of its user's parts, not others'.
	later := clk.now.Add(time.Minute)
	must(t, db.Reschedule(ctx, partID(t, db, "u-a"), later, "45009 rate limit", true))
	if got := fmt.Sprint(due(t, db, clk.now, 100)); got != "[v-a w-a]" {
		t.Errorf("DueParts with u delayed = %s, want [v-a w-a]", got)
	}
	if got := fmt.Sprint(due(t, db, later.Add(-time.Millisecond), 100)); got != "[v-a w-a]" {
		t.Errorf("DueParts just before u's time = %s, want [v-a w-a]", got)
	}
	// Those due first come first: u's delayed head after the others.
	if got := fmt.Sprint(due(t, db, later, 100)); got != "[v-a w-a u-a]" {
		t.Errorf("DueParts at u's time = %s, want [v-a w-a u-a]", got)
	}
	if got := fmt.Sprint(due(t, db, later, 2)); got != "[v-a w-a]" {
		t.Errorf("DueParts(limit 2) at u's time = %s, want [v-a w-a]", got)
	}
}

func TestNextDue(t *testing.T) { eachDriver(t, testNextDue) }

func testNextDue(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	if _, ok, err := db.NextDue(ctx); ok || err != nil {
		t.Fatalf("NextDue on an empty outbox = %v, %v; want false, nil", ok, err)
	}
	answer(t, db, insertMsg(t, db, "bot", "u", "u1"), "u-a", "u-b")
	answer(t, db, insertMsg(t, db, "bot", "v", "v1"), "v-a")

	check := func(want time.Time) {
		t.Helper()
		at, ok, err := db.NextDue(ctx)
		must(t, err)
		if !ok {
			t.Fatal("NextDue: nothing pending")
		}
		sameTime(t, "NextDue", at, want)
	}
	check(clk.now)

	// u-b is due by its own time, but waits behind u-a: it does not count.
	must(t, db.Reschedule(ctx, partID(t, db, "u-a"), t0.Add(time.Hour), "", false))
	must(t, db.Reschedule(ctx, partID(t, db, "v-a"), t0.Add(2*time.Hour), "", false))
	check(t0.Add(time.Hour))

	sendAll(t, db, "u-a")
	check(t0) // u-b, created at t0, is now u's head
	sendAll(t, db, "u-b")
	check(t0.Add(2 * time.Hour))
	sendAll(t, db, "v-a")
	if _, ok, err := db.NextDue(ctx); ok || err != nil {
		t.Errorf("NextDue with everything sent = %v, %v; want false, nil", ok, err)
	}
}

func TestMarkSent(t *testing.T) { eachDriver(t, testMarkSent) }

func testMarkSent(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	must(t, db.StartAnswer(ctx, m.ID))
	answer(t, db, m, "one", "two", "three")

	must(t, db.Reschedule(ctx, partID(t, db, "one"), clk.now, "timeout", true))
	clk.Advance(time.Second)
	sendAll(t, db, "one")
	p := part(t, db, "one")
	if p.State != OutboxSent || p.WeComMsgID != "wx-one" || p.Attempts != 1 || p.LastError != "" {
		t.Errorf("sent part = %+v", p)
	}
	sameTime(t, "SentAt", p.SentAt, clk.now)
	for _, c := range []string{"two", "three"} {
		if got := message(t, db, m.ID).State; got != MessageAnswering {
			t.Errorf("message state before %q is sent = %q, want answering", c, got)
		}
		clk.Advance(time.Second)
		sendAll(t, db, c)
	}
	got := message(t, db, m.ID)
	if got.State != MessageAnswered {
		t.Errorf("message state after the last part = %q, want answered", got.State)
	}
	sameTime(t, "AnsweredAt", got.AnsweredAt, clk.now)

	if err := db.MarkSent(ctx, 9999, "wx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkSent(unknown) err = %v, want ErrNotFound", err)
	}
}

func TestReschedule(t *testing.T) { eachDriver(t, testReschedule) }

func testReschedule(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	answer(t, db, insertMsg(t, db, "bot", "u", "k"), "p")
	id := partID(t, db, "p")
	steps := []struct {
		attempt bool
		reason  string
		want    int
	}{
		{true, "errcode -1 system busy", 1},
		{false, "pacing", 1},
		{true, "timeout", 2},
		{false, "", 2},
	}
	for i, s := range steps {
		next := clk.now.Add(time.Duration(i+1) * time.Minute)
		must(t, db.Reschedule(ctx, id, next, s.reason, s.attempt))
		p := part(t, db, "p")
		if p.Attempts != s.want || p.LastError != s.reason || p.State != OutboxPending {
			t.Errorf("step %d: part = %+v, want %d attempts, error %q", i, p, s.want, s.reason)
		}
		sameTime(t, "NextAttemptAt", p.NextAttemptAt, next)
	}
}

func TestFailPart(t *testing.T) { eachDriver(t, testFailPart) }

func testFailPart(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m1 := insertMsg(t, db, "bot", "u", "u1")
	answer(t, db, m1, "u1a", "u1b", "u1c")
	m2 := insertMsg(t, db, "bot", "u", "u2")
	answer(t, db, m2, "u2a")
	mv := insertMsg(t, db, "bot", "v", "v1")
	answer(t, db, mv, "v1a", "v1b")

	sendAll(t, db, "u1a")
	must(t, db.FailPart(ctx, partID(t, db, "u1b"), "errcode 81013 user left"))

	for c, want := range map[string]string{
		"u1a": OutboxSent, "u1b": OutboxFailed, "u1c": OutboxFailed,
		"u2a": OutboxPending, "v1a": OutboxPending, "v1b": OutboxPending,
	} {
		p := part(t, db, c)
		if p.State != want {
			t.Errorf("part %s state = %q, want %q", c, p.State, want)
		}
		if wantErr := map[bool]string{true: "errcode 81013 user left"}[want == OutboxFailed]; p.LastError != wantErr {
			t.Errorf("part %s error = %q, want %q", c, p.LastError, wantErr)
		}
	}
	got := message(t, db, m1.ID)
	if got.State != MessageFailed || got.Error != "errcode 81013 user left" {
		t.Errorf("message = %+v, want failed with the reason", got)
	}
	for _, m := range []Message{m2, mv} {
		if got := message(t, db, m.ID); got.State != MessageAnswering || got.Error != "" {
			t.Errorf("other message %s = %+v, want answering", m.DedupeKey, got)
		}
	}
	// Sent and failed parts are not pending; the others of every user are.
	if n, err := db.CountPendingParts(ctx); err != nil || n != 3 {
		t.Errorf("CountPendingParts = %d, %v; want 3 (u2a v1a v1b)", n, err)
	}
	// Failed parts no longer hold back the user's next reply.
	if got := fmt.Sprint(due(t, db, clk.now, 100)); got != "[u2a v1a]" {
		t.Errorf("DueParts = %s, want [u2a v1a]", got)
	}
	// A failed message is not resumed at start.
	un, err := db.UnansweredMessages(ctx)
	must(t, err)
	if len(un) != 0 {
		t.Errorf("UnansweredMessages = %+v, want none", un)
	}
	if err := db.FailPart(ctx, 9999, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("FailPart(unknown) err = %v, want ErrNotFound", err)
	}
}

func TestEnqueueText(t *testing.T) { eachDriver(t, testEnqueueText) }

func testEnqueueText(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "u1")
	answer(t, db, m, "reply")
	clk.Advance(time.Second)
	must(t, db.EnqueueText(ctx, "bot", "u", []string{"admin-1", "admin-2", "admin-3"}))
	must(t, db.EnqueueText(ctx, "bot", "v", []string{"admin-v"}))

	p := part(t, db, "admin-2")
	if p.MessageID != 0 || p.Seq != 1 || p.State != OutboxPending || p.Bot != "bot" || p.UserID != "u" {
		t.Errorf("enqueued part = %+v", p)
	}
	sameTime(t, "NextAttemptAt", p.NextAttemptAt, clk.now)
	sameTime(t, "CreatedAt", p.CreatedAt, clk.now)

	// The admin's text waits behind the reply already queued for u.
	if got := fmt.Sprint(due(t, db, clk.now, 100)); got != "[reply admin-v]" {
		t.Errorf("DueParts = %s, want [reply admin-v]", got)
	}
	sendAll(t, db, "reply", "admin-1")
	if got := message(t, db, m.ID).State; got != MessageAnswered {
		t.Errorf("message state = %q, want answered", got)
	}
	if got := part(t, db, "admin-1"); got.State != OutboxSent || got.WeComMsgID != "wx-admin-1" {
		t.Errorf("sent admin part = %+v", got)
	}

	// Failing a part that answers no message fails that part only.
	must(t, db.FailPart(ctx, partID(t, db, "admin-2"), "errcode 40003"))
	for c, want := range map[string]string{
		"admin-1": OutboxSent, "admin-2": OutboxFailed, "admin-3": OutboxPending, "admin-v": OutboxPending,
	} {
		if got := part(t, db, c).State; got != want {
			t.Errorf("part %s state = %q, want %q", c, got, want)
		}
	}
	if got := message(t, db, m.ID).State; got != MessageAnswered {
		t.Errorf("message state after failing an admin part = %q, want answered", got)
	}
	if got := fmt.Sprint(due(t, db, clk.now, 100)); got != "[admin-3 admin-v]" {
		t.Errorf("DueParts = %s, want [admin-3 admin-v]", got)
	}
}

func TestEnqueueTextNoParts(t *testing.T) { eachDriver(t, testEnqueueTextNoParts) }

func testEnqueueTextNoParts(t *testing.T) {
	db, clk := newDB(t)
	must(t, db.EnqueueText(t.Context(), "bot", "u", nil))
	if got := dueParts(t, db, clk.now); len(got) != 0 {
		t.Errorf("DueParts = %+v, want none", got)
	}
}

func TestFailureNoticeEndsFailed(t *testing.T) { eachDriver(t, testFailureNoticeEndsFailed) }

func testFailureNoticeEndsFailed(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	must(t, db.StartAnswer(ctx, m.ID))
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u", Parts: []string{"sorry"}, Failure: "llm: timed out"}))
	if got := message(t, db, m.ID); got.State != MessageAnswering || got.Error != "llm: timed out" {
		t.Fatalf("before the notice is sent: %+v", got)
	}
	must(t, db.MarkSent(ctx, partID(t, db, "sorry"), "wx"))
	if got := message(t, db, m.ID); got.State != MessageFailed || got.Error != "llm: timed out" {
		t.Errorf("after the notice is sent: state %q error %q, want failed with the reason", got.State, got.Error)
	}
	// A failure without any notice to send ends failed at once.
	m2 := insertMsg(t, db, "bot", "u", "k2")
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m2.ID, Bot: "bot", UserID: "u", Failure: "no notice configured"}))
	if got := message(t, db, m2.ID); got.State != MessageFailed {
		t.Errorf("failure without parts: state %q, want failed", got.State)
	}
}

func TestRetryMessage(t *testing.T) { eachDriver(t, testRetryMessage) }

func testRetryMessage(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	answer(t, db, m, "one", "two")
	must(t, db.FailPart(ctx, partID(t, db, "one"), "user gone"))
	if got := message(t, db, m.ID); got.State != MessageFailed {
		t.Fatalf("state %q", got.State)
	}
	must(t, db.RetryMessage(ctx, m.ID))
	got := message(t, db, m.ID)
	if got.State != MessageAnswering || got.Error != "" {
		t.Fatalf("after retry: %q %q", got.State, got.Error)
	}
	due, err := db.DueParts(ctx, db.Now(), 10)
	if err != nil || len(due) != 1 || due[0].Content != "one" || due[0].Attempts != 0 {
		t.Fatalf("due after retry: %+v %v", due, err)
	}
	if err := db.RetryMessage(ctx, m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retry without failed parts: %v", err)
	}
}

func TestClaimPartOnce(t *testing.T) { eachDriver(t, testClaimPartOnce) }

func testClaimPartOnce(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	answer(t, db, m, "one")
	id := partID(t, db, "one")
	// Two senders read the part with 0 attempts; only one may send it.
	first, err := db.ClaimPart(ctx, id, 0, clk.now.Add(time.Minute))
	must(t, err)
	second, err := db.ClaimPart(ctx, id, 0, clk.now.Add(time.Minute))
	must(t, err)
	if !first || second {
		t.Fatalf("claims: %v, %v; want exactly the first", first, second)
	}
	p := part(t, db, "one")
	if p.Attempts != 1 || p.LastError != "sending" {
		t.Fatalf("claimed part: %+v", p)
	}
	if due, _ := db.DueParts(ctx, clk.now, 10); len(due) != 0 {
		t.Fatal("a claimed part is due again before its retry time")
	}
	must(t, db.MarkSent(ctx, id, "wx"))
	if ok, _ := db.ClaimPart(ctx, id, 1, clk.now); ok {
		t.Fatal("a sent part was claimed")
	}
}
