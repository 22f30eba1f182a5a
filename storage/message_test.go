package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestInsertMessageDedupe(t *testing.T) { eachDriver(t, testInsertMessageDedupe) }

func testInsertMessageDedupe(t *testing.T) {
	db, _ := newDB(t)
	tests := []struct {
		bot, key string
		want     bool
	}{
		{"a", "k1", true},
		{"a", "k1", false}, // WeCom's retry of the same callback
		{"b", "k1", true},  // same MsgId at another bot is another message
		{"a", "k2", true},
		{"b", "k1", false},
		{"a", "k2", false},
	}
	for i, tt := range tests {
		m := Message{Bot: tt.bot, DedupeKey: tt.key, UserID: "u", MsgType: "text", Content: fmt.Sprint(i)}
		got, err := db.InsertMessage(t.Context(), &m)
		must(t, err)
		if got != tt.want {
			t.Errorf("#%d InsertMessage(%s/%s) = %v, want %v", i, tt.bot, tt.key, got, tt.want)
		}
		if tt.want && m.ID == 0 {
			t.Errorf("#%d new message has no ID", i)
		}
	}
	if n := messageCount(t, db); n != 3 {
		t.Errorf("%d messages stored, want 3", n)
	}
}

// messageCount is the number of rows in messages.
func messageCount(t *testing.T, db *DB) int64 {
	t.Helper()
	var n int64
	must(t, db.db.Model(&messageRow{}).Count(&n).Error)
	return n
}

func TestInsertMessageFields(t *testing.T) { eachDriver(t, testInsertMessageFields) }

func testInsertMessageFields(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	in := Message{Bot: "bot", DedupeKey: "u|1700000000|enter_agent", UserID: "u", MsgType: "event",
		Event: "enter_agent", CreateTime: 1700000000}
	ok, err := db.InsertMessage(ctx, &in)
	if !ok || err != nil {
		t.Fatalf("InsertMessage = %v, %v", ok, err)
	}
	got := message(t, db, in.ID)
	want := in
	want.State = MessageReceived
	if got.Bot != want.Bot || got.DedupeKey != want.DedupeKey || got.UserID != want.UserID ||
		got.MsgType != want.MsgType || got.Event != want.Event || got.CreateTime != want.CreateTime ||
		got.State != MessageReceived || got.Attempts != 0 || got.Error != "" || !got.AnsweredAt.IsZero() {
		t.Errorf("GetMessage = %+v, want %+v", got, want)
	}
	sameTime(t, "ReceivedAt", got.ReceivedAt, clk.now)

	// A given state and receive time are kept.
	at := t0.Add(-time.Hour)
	ign := Message{Bot: "bot", DedupeKey: "x", UserID: "u", MsgType: "event", State: MessageIgnored, ReceivedAt: at}
	ok, err = db.InsertMessage(ctx, &ign)
	if !ok || err != nil {
		t.Fatalf("InsertMessage = %v, %v", ok, err)
	}
	got = message(t, db, ign.ID)
	if got.State != MessageIgnored {
		t.Errorf("State = %q, want %q", got.State, MessageIgnored)
	}
	sameTime(t, "ReceivedAt", got.ReceivedAt, at)

	if _, err := db.GetMessage(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetMessage(unknown) err = %v, want ErrNotFound", err)
	}
}

func TestInsertMessageConcurrent(t *testing.T) { eachDriver(t, testInsertMessageConcurrent) }

func testInsertMessageConcurrent(t *testing.T) {
	db, _ := newDB(t)
	const n = 50
	var (
		wg   sync.WaitGroup
		news atomic.Int32
		errs = make(chan error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := Message{Bot: "bot", DedupeKey: "same", UserID: "u", MsgType: "text", Content: fmt.Sprint(i)}
			ok, err := db.InsertMessage(t.Context(), &m)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				news.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := news.Load(); got != 1 {
		t.Errorf("%d inserts reported new, want exactly 1", got)
	}
	if rows := messageCount(t, db); rows != 1 {
		t.Errorf("%d rows stored, want 1", rows)
	}
}

func TestInsertMessageRequiresKey(t *testing.T) { eachDriver(t, testInsertMessageRequiresKey) }

func testInsertMessageRequiresKey(t *testing.T) {
	db, _ := newDB(t)
	for _, m := range []Message{
		{DedupeKey: "k", UserID: "u"},
		{Bot: "bot", UserID: "u"},
		{},
	} {
		if ok, err := db.InsertMessage(t.Context(), &m); err == nil || ok {
			t.Errorf("InsertMessage(bot=%q key=%q) = %v, %v; want an error", m.Bot, m.DedupeKey, ok, err)
		}
	}
}

func TestStartAnswerAndState(t *testing.T) { eachDriver(t, testStartAnswerAndState) }

func testStartAnswerAndState(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	for want := 1; want <= 3; want++ {
		must(t, db.StartAnswer(ctx, m.ID))
		got := message(t, db, m.ID)
		if got.State != MessageAnswering || got.Attempts != want {
			t.Errorf("after StartAnswer #%d: state %q attempts %d", want, got.State, got.Attempts)
		}
	}

	must(t, db.SetMessageState(ctx, m.ID, MessageFailed, "llm: timeout"))
	got := message(t, db, m.ID)
	if got.State != MessageFailed || got.Error != "llm: timeout" || !got.AnsweredAt.IsZero() {
		t.Errorf("after failure = %+v", got)
	}
	clk.Advance(time.Minute)
	must(t, db.SetMessageState(ctx, m.ID, MessageAnswered, ""))
	got = message(t, db, m.ID)
	if got.State != MessageAnswered || got.Error != "" || got.Attempts != 3 {
		t.Errorf("after answered = %+v", got)
	}
	sameTime(t, "AnsweredAt", got.AnsweredAt, clk.now)
}

// UnansweredMessages returns the pending messages of every user, oldest
// first: what PendingMessages and UnclaimedUsers select from (pendingMessage).
// The service reads its work per user (lease.go); the tests check the state
// of a whole database with this.
func (d *DB) UnansweredMessages(ctx context.Context) ([]Message, error) {
	var rows []messageRow
	err := d.db.WithContext(ctx).
		Where(pendingMessage).
		Order("id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: list unanswered messages: %w", err)
	}
	out := make([]Message, len(rows))
	for i, r := range rows {
		out[i] = r.message()
	}
	return out, nil
}

func TestUnansweredMessages(t *testing.T) { eachDriver(t, testUnansweredMessages) }

func testUnansweredMessages(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	received := insertMsg(t, db, "bot", "u1", "1")
	withParts := insertMsg(t, db, "bot", "u1", "2")
	answering := insertMsg(t, db, "bot", "u2", "3")
	answered := insertMsg(t, db, "bot", "u2", "4")
	failed := insertMsg(t, db, "bot", "u3", "5")
	ignored := insertMsg(t, db, "bot", "u3", "6")
	other := insertMsg(t, db, "other", "u1", "1")

	must(t, db.StartAnswer(ctx, withParts.ID))
	answer(t, db, withParts, "part")
	must(t, db.StartAnswer(ctx, answering.ID))
	must(t, db.StartAnswer(ctx, answered.ID))
	answer(t, db, answered) // no parts: answered now
	must(t, db.SetMessageState(ctx, failed.ID, MessageFailed, "boom"))
	must(t, db.SetMessageState(ctx, ignored.ID, MessageIgnored, ""))

	got, err := db.UnansweredMessages(ctx)
	must(t, err)
	want := []int64{received.ID, answering.ID, other.ID}
	var ids []int64
	for _, m := range got {
		ids = append(ids, m.ID)
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("UnansweredMessages ids = %v, want %v", ids, want)
	}
	if len(got) == 3 && (got[1].State != MessageAnswering || got[1].Attempts != 1 || got[0].Content != received.Content) {
		t.Errorf("UnansweredMessages = %+v", got)
	}
}

func TestSaveAnswerWithParts(t *testing.T) { eachDriver(t, testSaveAnswerWithParts) }

func testSaveAnswerWithParts(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	must(t, db.StartAnswer(ctx, m.ID))
	clk.Advance(3 * time.Second)
	must(t, db.SaveAnswer(ctx, Answer{
		MessageID: m.ID, Bot: "bot", UserID: "u",
		UserTurn: "hello", AssistantTurn: "first second third",
		Parts: []string{"first", "second", "third"},
	}))
	if got := message(t, db, m.ID); got.State != MessageAnswering || !got.AnsweredAt.IsZero() {
		t.Errorf("message = %+v, want answering", got)
	}
	parts, err := db.PartsOf(ctx, m.ID)
	must(t, err)
	if len(parts) != 3 {
		t.Fatalf("PartsOf = %+v, want 3 parts", parts)
	}
	for i, p := range parts {
		if p.Content != []string{"first", "second", "third"}[i] || p.Seq != i || p.State != OutboxPending ||
			p.MessageID != m.ID || p.Bot != "bot" || p.UserID != "u" || p.Attempts != 0 {
			t.Errorf("part %d = %+v", i, p)
		}
		sameTime(t, "NextAttemptAt", p.NextAttemptAt, clk.now)
		sameTime(t, "CreatedAt", p.CreatedAt, clk.now)
		if i > 0 && p.ID <= parts[i-1].ID {
			t.Errorf("part ids not increasing: %d after %d", p.ID, parts[i-1].ID)
		}
	}
	h, err := db.History(ctx, "bot", "u", 10)
	must(t, err)
	if len(h) != 2 || h[0].Role != RoleUser || h[0].Content != "hello" ||
		h[1].Role != RoleAssistant || h[1].Content != "first second third" {
		t.Errorf("History = %+v", h)
	}
}

func TestSaveAnswerWithoutParts(t *testing.T) { eachDriver(t, testSaveAnswerWithoutParts) }

func testSaveAnswerWithoutParts(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k")
	must(t, db.SetMessageState(ctx, m.ID, MessageAnswering, "previous attempt failed"))
	clk.Advance(time.Second)
	// Only one side of the pair: no turns appended.
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u", UserTurn: "hi"}))
	got := message(t, db, m.ID)
	if got.State != MessageAnswered || got.Error != "" {
		t.Errorf("message = %+v, want answered without error", got)
	}
	sameTime(t, "AnsweredAt", got.AnsweredAt, clk.now)
	if parts, err := db.PartsOf(ctx, m.ID); err != nil || len(parts) != 0 {
		t.Errorf("PartsOf = %+v, %v; want none", parts, err)
	}
	if h, err := db.History(ctx, "bot", "u", 10); err != nil || len(h) != 0 {
		t.Errorf("History = %+v, %v; want empty", h, err)
	}
}

func TestSaveAnswerResetConversation(t *testing.T) { eachDriver(t, testSaveAnswerResetConversation) }

func testSaveAnswerResetConversation(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	for i := range 3 {
		answer(t, db, insertMsg(t, db, "bot", "u", fmt.Sprint("old", i)), "old")
	}
	answer(t, db, insertMsg(t, db, "bot", "v", "v1"), "v's")

	m := insertMsg(t, db, "bot", "u", "reset")
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u", ResetConversation: true,
		UserTurn: "/reset then hi", AssistantTurn: "fresh", Parts: []string{"fresh"}}))
	h, err := db.History(ctx, "bot", "u", 10)
	must(t, err)
	if len(h) != 2 || h[0].Content != "/reset then hi" || h[1].Content != "fresh" {
		t.Errorf("History after reset = %+v, want only the new pair", h)
	}
	// A bare /reset leaves an empty conversation.
	m = insertMsg(t, db, "bot", "u", "bare reset")
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u", ResetConversation: true,
		Parts: []string{"conversation cleared"}}))
	if h, _ := db.History(ctx, "bot", "u", 10); len(h) != 0 {
		t.Errorf("History after bare reset = %+v, want empty", h)
	}
	if h, _ := db.History(ctx, "bot", "v", 10); len(h) != 2 {
		t.Errorf("other user's History = %+v, want untouched", h)
	}
}
