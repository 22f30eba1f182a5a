package storage

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func kfMsg(key, user, state string) Message {
	return Message{DedupeKey: key, UserID: user, MsgType: "text", Content: "q " + key, CreateTime: 1, State: state}
}

func TestKFAccountStart(t *testing.T) { eachDriver(t, testKFAccountStart) }

func testKFAccountStart(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	if _, err := db.KFAccount(ctx, "bot", "wkA"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("KFAccount before start: err = %v, want ErrNotFound", err)
	}
	a, err := db.StartKFAccount(ctx, "bot", "wkA")
	must(t, err)
	sameTime(t, "started_at", a.StartedAt, t0)
	if a.Cursor != "" || !a.LastPullAt.IsZero() {
		t.Errorf("new account = %+v", a)
	}
	// A later start (a restart, another instance) keeps the first time.
	clk.Advance(time.Hour)
	again, err := db.StartKFAccount(ctx, "bot", "wkA")
	must(t, err)
	sameTime(t, "started_at after a second start", again.StartedAt, t0)

	must(t, db.SetKFPull(ctx, "bot", "wkA", "errcode 95007"))
	a, err = db.KFAccount(ctx, "bot", "wkA")
	must(t, err)
	sameTime(t, "last_pull_at", a.LastPullAt, t0.Add(time.Hour))
	if a.LastError != "errcode 95007" {
		t.Errorf("last_error = %q", a.LastError)
	}
	_, err = db.StartKFAccount(ctx, "bot", "wkB")
	must(t, err)
	_, err = db.StartKFAccount(ctx, "other", "wkA")
	must(t, err)
	list, err := db.KFAccounts(ctx, "bot")
	must(t, err)
	if len(list) != 2 || list[0].OpenKfID != "wkA" || list[1].OpenKfID != "wkB" {
		t.Errorf("KFAccounts = %+v", list)
	}
}

func TestStoreKFPage(t *testing.T) { eachDriver(t, testStoreKFPage) }

func testStoreKFPage(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	_, err := db.StartKFAccount(ctx, "bot", "wkA")
	must(t, err)

	added, err := db.StoreKFPage(ctx, "bot", "wkA", "c1", []Message{
		kfMsg("kf:wkA:m1", "kf:wkA:wm1", ""), kfMsg("kf:wkA:m2", "kf:wkA:wm1", MessageIgnored),
	})
	must(t, err)
	if len(added) != 2 || added[0].ID == 0 || added[0].Bot != "bot" || added[0].State != MessageReceived || added[1].State != MessageIgnored {
		t.Fatalf("added = %+v", added)
	}
	a, err := db.KFAccount(ctx, "bot", "wkA")
	must(t, err)
	if a.Cursor != "c1" {
		t.Errorf("cursor = %q, want c1", a.Cursor)
	}
	// A page read again (a crash before the cursor moved, or WeCom
	// returning a message twice) adds only what is new; a page without
	// cursor keeps the stored one.
	added, err = db.StoreKFPage(ctx, "bot", "wkA", "", []Message{
		kfMsg("kf:wkA:m2", "kf:wkA:wm1", ""), kfMsg("kf:wkA:m3", "kf:wkA:wm2", ""),
	})
	must(t, err)
	if len(added) != 1 || added[0].DedupeKey != "kf:wkA:m3" {
		t.Errorf("added on the second page = %+v, want m3 only", added)
	}
	a, err = db.KFAccount(ctx, "bot", "wkA")
	must(t, err)
	if a.Cursor != "c1" {
		t.Errorf("cursor after a page without one = %q, want c1", a.Cursor)
	}
	m, err := db.GetMessage(ctx, added[0].ID)
	must(t, err)
	if m.UserID != "kf:wkA:wm2" || m.State != MessageReceived || m.Content != "q kf:wkA:m3" {
		t.Errorf("stored message = %+v", m)
	}
	// Messages and cursor go together: a failing page stores neither.
	if _, err := db.StoreKFPage(ctx, "bot", "wkA", "c9", []Message{kfMsg("kf:wkA:m4", "u", ""), {UserID: "u"}}); err == nil {
		t.Fatal("a page with a message without key was stored")
	}
	if _, err := db.StoreKFPage(ctx, "bot", "wkZ", "c9", []Message{kfMsg("kf:wkZ:m1", "u", "")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("page of an account never started: err = %v, want ErrNotFound", err)
	}
	a, err = db.KFAccount(ctx, "bot", "wkA")
	must(t, err)
	if a.Cursor != "c1" {
		t.Errorf("cursor after failed pages = %q, want c1", a.Cursor)
	}
	for _, key := range []string{"kf:wkA:m4", "kf:wkZ:m1"} {
		again, err := db.StoreKFPage(ctx, "bot", "wkA", "", []Message{kfMsg(key, "u", "")})
		must(t, err)
		if len(again) != 1 {
			t.Errorf("%s was stored by a failed page", key)
		}
	}
}

// TestStoreKFPageConcurrent: two pullers storing the same page (which
// the lease prevents, but a lease can expire) add each message once.
func TestStoreKFPageConcurrent(t *testing.T) { eachDriver(t, testStoreKFPageConcurrent) }

func testStoreKFPageConcurrent(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	_, err := db.StartKFAccount(ctx, "bot", "wkA")
	must(t, err)
	page := []Message{kfMsg("kf:wkA:m1", "u", ""), kfMsg("kf:wkA:m2", "u", ""), kfMsg("kf:wkA:m3", "u", "")}
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for i := range counts {
		wg.Go(func() {
			added, err := db.StoreKFPage(ctx, "bot", "wkA", "c", page)
			if err != nil {
				t.Error(err)
			}
			counts[i] = len(added)
		})
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != len(page) {
		t.Errorf("messages added by 4 concurrent stores = %d, want %d", total, len(page))
	}
}

func TestKFHandedOver(t *testing.T) { eachDriver(t, testKFHandedOver) }

func testKFHandedOver(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	users := []string{"kf:wkA:wm1", "kf:wkA:wm2"}
	got, err := db.KFHandedOver(ctx, "bot", users, t0.Add(-time.Hour))
	must(t, err)
	if len(got) != 0 {
		t.Errorf("hand-overs before any = %v", got)
	}
	must(t, db.SetKFHandedOver(ctx, "bot", "kf:wkA:wm1", true))
	must(t, db.SetKFHandedOver(ctx, "other", "kf:wkA:wm2", true))
	got, err = db.KFHandedOver(ctx, "bot", users, t0.Add(-time.Hour))
	must(t, err)
	if !got["kf:wkA:wm1"] || got["kf:wkA:wm2"] {
		t.Errorf("hand-overs = %v, want wm1 only", got)
	}
	// Older than the horizon: over.
	clk.Advance(time.Hour)
	if got, err = db.KFHandedOver(ctx, "bot", users, t0); err != nil || len(got) != 0 {
		t.Errorf("hand-overs after the horizon = %v, %v", got, err)
	}
	must(t, db.SetKFHandedOver(ctx, "bot", "kf:wkA:wm1", true))
	must(t, db.SetKFHandedOver(ctx, "bot", "kf:wkA:wm1", false))
	if got, err = db.KFHandedOver(ctx, "bot", users, t0.Add(-time.Hour)); err != nil || len(got) != 0 {
		t.Errorf("hand-overs after the conversation came back = %v, %v", got, err)
	}
}

func TestKFRefused(t *testing.T) { eachDriver(t, testKFRefused) }

func testKFRefused(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	const wm1 = "kf:wkA:wm1"
	if since, err := db.KFRefusedSince(ctx, "bot", wm1); err != nil || !since.IsZero() {
		t.Errorf("refusal before any = %v, %v", since, err)
	}
	must(t, db.SetKFHandedOver(ctx, "bot", wm1, true)) // the row exists already
	must(t, db.SetKFRefused(ctx, "bot", wm1))
	if since, err := db.KFRefusedSince(ctx, "bot", wm1); err != nil || !since.Equal(t0) {
		t.Errorf("refusal = %v, %v; want %v", since, err, t0)
	}
	if since, err := db.KFRefusedSince(ctx, "other", wm1); err != nil || !since.IsZero() {
		t.Errorf("another bot's customer refuses since %v, %v", since, err)
	}
	if got, err := db.KFHandedOver(ctx, "bot", []string{wm1}, t0.Add(-time.Hour)); err != nil || !got[wm1] {
		t.Errorf("the refusal lost the hand-over: %v, %v", got, err)
	}
	must(t, db.ClearKFRefused(ctx, "bot", []string{wm1, "kf:wkA:wm2"}))
	if since, err := db.KFRefusedSince(ctx, "bot", wm1); err != nil || !since.IsZero() {
		t.Errorf("refusal after clearing = %v, %v", since, err)
	}
}

func TestFailDeliveredPart(t *testing.T) { eachDriver(t, testFailDeliveredPart) }

func testFailDeliveredPart(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "kf:wkA:wm1", "k1")
	answer(t, db, m, "part one")
	parts, err := db.PartsOf(ctx, m.ID)
	must(t, err)
	must(t, db.MarkSent(ctx, parts[0].ID, "wbMSGID"))
	if err := db.FailDeliveredPart(ctx, "other", "wbMSGID", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another bot's msgid: err = %v, want ErrNotFound", err)
	}
	must(t, db.FailDeliveredPart(ctx, "bot", "wbMSGID", "over the budget"))
	parts, err = db.PartsOf(ctx, m.ID)
	must(t, err)
	got, err := db.GetMessage(ctx, m.ID)
	must(t, err)
	if parts[0].State != OutboxFailed || parts[0].LastError != "over the budget" || got.State != MessageFailed || got.Error != "over the budget" {
		t.Errorf("after the failure: part %+v, message %+v", parts[0], got)
	}
}

func TestDropUnanswered(t *testing.T) { eachDriver(t, testDropUnanswered) }

func testDropUnanswered(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k1")
	started := insertMsg(t, db, "bot", "u", "k2")
	must(t, db.StartAnswer(ctx, started.ID))
	for _, tt := range []struct {
		key  string
		want bool
	}{{"k1", true}, {"k1", false}, {"k2", false}, {"nope", false}} {
		got, err := db.DropUnanswered(ctx, "bot", tt.key, "recalled")
		if err != nil || got != tt.want {
			t.Errorf("DropUnanswered(%s) = %v, %v; want %v", tt.key, got, err, tt.want)
		}
	}
	got, err := db.GetMessage(ctx, m.ID)
	must(t, err)
	if got.State != MessageIgnored || got.Error != "recalled" {
		t.Errorf("recalled message = %+v", got)
	}
}

func TestKFMessagesSince(t *testing.T) { eachDriver(t, testKFMessagesSince) }

func testKFMessagesSince(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	midnight := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	msg := func(key, user, msgType string, sent time.Time) Message {
		return Message{DedupeKey: key, UserID: user, MsgType: msgType, CreateTime: sent.Unix(), State: MessageIgnored, ReceivedAt: clk.Now()}
	}
	for _, a := range []string{"wkA", "wkB"} {
		_, err := db.StartKFAccount(ctx, "bot", a)
		must(t, err)
	}
	// Yesterday's message, stored yesterday.
	clk.now = midnight.Add(-time.Hour)
	_, err := db.StoreKFPage(ctx, "bot", "wkA", "", []Message{msg("y1", "kf:wkA:c1", "text", clk.now)})
	must(t, err)
	clk.now = t0
	_, err = db.StoreKFPage(ctx, "bot", "wkA", "", []Message{
		msg("a1", "kf:wkA:c1", "text", t0.Add(-time.Hour)),          // a customer's
		msg("a2", "kf:wkA:c2", "image", t0.Add(-time.Minute)),       // another customer's
		msg("a3", "kf:wkA:c1", "text", midnight),                    // a receptionist's, at midnight
		msg("a4", "kf:wkA:c1", "event", t0),                         // enter_session: not a message
		msg("h1", "kf:wkA:c3", "text", midnight.Add(-48*time.Hour)), // history of a first pull, stored today
	})
	must(t, err)
	_, err = db.StoreKFPage(ctx, "bot", "wkB", "", []Message{msg("b1", "kf:wkB:c1", "text", t0)})
	must(t, err)
	// Not kf conversations of bot.
	insertMsg(t, db, "bot", "zhangsan", "e1")
	insertMsg(t, db, "bot", "KF:wkA:c1", "e2")
	insertMsg(t, db, "other", "kf:wkA:c1", "o1")

	got, err := db.KFMessagesSince(ctx, "bot", midnight)
	must(t, err)
	if len(got) != 2 || got["wkA"] != 3 || got["wkB"] != 1 {
		t.Errorf("KFMessagesSince = %v, want wkA 3, wkB 1", got)
	}
	none, err := db.KFMessagesSince(ctx, "quiet", midnight)
	must(t, err)
	if len(none) != 0 {
		t.Errorf("KFMessagesSince of a bot without kf = %v", none)
	}
}

func TestAnswerOfDroppedMessage(t *testing.T) { eachDriver(t, testAnswerOfDroppedMessage) }

// testAnswerOfDroppedMessage: a message dropped while it was answered
// (read as received, then withdrawn) keeps its state; its answer (turns,
// parts) is not stored, and StartAnswer does not revive it.
func testAnswerOfDroppedMessage(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k1")
	ok, err := db.DropUnanswered(ctx, "bot", "k1", "recalled")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	must(t, db.StartAnswer(ctx, m.ID))
	err = db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u", UserTurn: "q", AssistantTurn: "a", Parts: []string{"a"}})
	if !errors.Is(err, ErrDropped) {
		t.Errorf("SaveAnswer = %v, want ErrDropped", err)
	}
	got, err := db.GetMessage(ctx, m.ID)
	must(t, err)
	if got.State != MessageIgnored || got.Error != "recalled" {
		t.Errorf("dropped message = %+v", got)
	}
	parts, err := db.PartsOf(ctx, m.ID)
	must(t, err)
	turns, err := db.History(ctx, "bot", "u", 5)
	must(t, err)
	if len(parts) != 0 || len(turns) != 0 {
		t.Errorf("stored %d parts and %d turns of a dropped message's answer", len(parts), len(turns))
	}

	// Any other message is answered as before.
	other := insertMsg(t, db, "bot", "u", "k2")
	must(t, db.SaveAnswer(ctx, Answer{MessageID: other.ID, Bot: "bot", UserID: "u", Failure: "no model"}))
	if got, err := db.GetMessage(ctx, other.ID); err != nil || got.State != MessageFailed || got.Error != "no model" {
		t.Errorf("message = %+v, %v; want failed", got, err)
	}
}
