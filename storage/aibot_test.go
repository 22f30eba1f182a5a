package storage

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newStream(t *testing.T, db *DB, streamID string, m Message) AIBotStream {
	t.Helper()
	s, created, err := db.CreateAIBotStream(t.Context(), AIBotStream{
		Bot: m.Bot, StreamID: streamID, MessageID: m.ID, FeedbackID: "fb-" + streamID,
		ResponseURL: "https://example.invalid/response?code=" + streamID,
	})
	if err != nil || !created {
		t.Fatalf("CreateAIBotStream(%s) = %v, %v; want created", streamID, created, err)
	}
	return s
}

func TestAIBotStreamCreateOrGet(t *testing.T) { eachDriver(t, testAIBotStreamCreateOrGet) }

func testAIBotStreamCreateOrGet(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k1")
	first := newStream(t, db, "s1", m)
	if first.MessageID != m.ID || first.Content != "" || first.Finished || first.FeedbackID != "fb-s1" ||
		first.ResponseURL == "" || !first.ResponseUsedAt.IsZero() {
		t.Errorf("created stream = %+v", first)
	}
	sameTime(t, "created_at", first.CreatedAt, t0)

	// A repeated callback (a new response_url, later) gets the first row.
	must(t, db.UpdateAIBotStream(ctx, "bot", "s1", "hel"))
	clk.Advance(time.Second)
	again, created, err := db.CreateAIBotStream(ctx, AIBotStream{
		Bot: "bot", StreamID: "s1", MessageID: m.ID, FeedbackID: "other", ResponseURL: "https://example.invalid/2",
	})
	must(t, err)
	if created {
		t.Error("a repeated create reported a new stream")
	}
	if again.Content != "hel" || again.FeedbackID != "fb-s1" || again.ResponseURL != first.ResponseURL {
		t.Errorf("repeated create = %+v, want the first row with its content", again)
	}
	sameTime(t, "created_at of the repeat", again.CreatedAt, t0)

	// The same stream id of another bot is another stream.
	other := insertMsg(t, db, "bot2", "u", "k1")
	newStream(t, db, "s1", other)

	if _, err := db.GetAIBotStream(ctx, "bot", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAIBotStream(unknown) err = %v, want ErrNotFound", err)
	}
	if _, _, err := db.CreateAIBotStream(ctx, AIBotStream{Bot: "bot"}); err == nil {
		t.Error("a stream without id was created")
	}
}

func TestAIBotStreamConcurrentCreate(t *testing.T) { eachDriver(t, testAIBotStreamConcurrentCreate) }

func testAIBotStreamConcurrentCreate(t *testing.T) {
	db, _ := newDB(t)
	m := insertMsg(t, db, "bot", "u", "k1")
	const n = 20
	var (
		wg      sync.WaitGroup
		created atomic.Int32
		errs    = make(chan error, n)
	)
	for range n {
		wg.Go(func() {
			s, ok, err := db.CreateAIBotStream(t.Context(), AIBotStream{Bot: "bot", StreamID: "same", MessageID: m.ID})
			if err != nil {
				errs <- err
				return
			}
			if s.StreamID != "same" || s.MessageID != m.ID {
				errs <- errors.New("a create returned another row")
			}
			if ok {
				created.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := created.Load(); got != 1 {
		t.Errorf("%d creates reported new, want exactly 1", got)
	}
	var rows int64
	must(t, db.db.Model(&aibotStreamRow{}).Count(&rows).Error)
	if rows != 1 {
		t.Errorf("%d rows stored, want 1", rows)
	}
}

func TestAIBotStreamContent(t *testing.T) { eachDriver(t, testAIBotStreamContent) }

func testAIBotStreamContent(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k1")
	newStream(t, db, "s1", m)
	content := func() AIBotStream {
		t.Helper()
		s, err := db.GetAIBotStream(ctx, "bot", "s1")
		must(t, err)
		return s
	}

	must(t, db.UpdateAIBotStream(ctx, "bot", "s1", "你好"))
	clk.Advance(time.Second)
	must(t, db.UpdateAIBotStream(ctx, "bot", "s1", "你好，世界"))
	must(t, db.UpdateAIBotStream(ctx, "bot", "s1", "你好，世界")) // the same text again: fine
	if s := content(); s.Content != "你好，世界" {
		t.Errorf("content = %q", s.Content)
	} else {
		sameTime(t, "updated_at", s.UpdatedAt, t0.Add(time.Second))
	}
	for _, bad := range []string{"你好", "", "你好，世", "再见，世界和平"} {
		if err := db.UpdateAIBotStream(ctx, "bot", "s1", bad); !errors.Is(err, ErrStreamNotCumulative) {
			t.Errorf("Update(%q) err = %v, want ErrStreamNotCumulative", bad, err)
		}
	}
	// Text that happens to hold LIKE or regexp characters is compared as is.
	must(t, db.UpdateAIBotStream(ctx, "bot", "s1", "你好，世界 100%_*"))
	if err := db.FinishAIBotStream(ctx, "bot", "s1", "你好"); !errors.Is(err, ErrStreamNotCumulative) {
		t.Errorf("Finish with shorter text err = %v, want ErrStreamNotCumulative", err)
	}
	if content().Finished {
		t.Fatal("a refused finish finished the stream")
	}

	must(t, db.FinishAIBotStream(ctx, "bot", "s1", "你好，世界 100%_* 🎉"))
	if s := content(); !s.Finished || s.Content != "你好，世界 100%_* 🎉" {
		t.Errorf("finished stream = %+v", s)
	}
	// Finished is final: no growth, no second finish.
	if err := db.UpdateAIBotStream(ctx, "bot", "s1", "你好，世界 100%_* 🎉 more"); !errors.Is(err, ErrStreamFinished) {
		t.Errorf("Update after finish err = %v, want ErrStreamFinished", err)
	}
	if err := db.FinishAIBotStream(ctx, "bot", "s1", "你好，世界 100%_* 🎉"); !errors.Is(err, ErrStreamFinished) {
		t.Errorf("second Finish err = %v, want ErrStreamFinished", err)
	}
	if s := content(); !s.Finished || s.Content != "你好，世界 100%_* 🎉" {
		t.Errorf("finished stream changed: %+v", s)
	}

	for name, err := range map[string]error{
		"update": db.UpdateAIBotStream(ctx, "bot", "nope", "x"),
		"finish": db.FinishAIBotStream(ctx, "bot", "nope", "x"),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of an unknown stream err = %v, want ErrNotFound", name, err)
		}
	}
}

func TestAIBotStreamClaimResponseURL(t *testing.T) { eachDriver(t, testAIBotStreamClaimResponseURL) }

func testAIBotStreamClaimResponseURL(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "bot", "u", "k1")
	newStream(t, db, "s1", m)
	newStream(t, db, "old", m)
	newStream(t, db, "edge", m)
	if _, _, err := db.CreateAIBotStream(ctx, AIBotStream{Bot: "bot", StreamID: "ws", MessageID: m.ID}); err != nil {
		t.Fatal(err)
	}
	claim := func(id string, now time.Time) bool {
		t.Helper()
		ok, err := db.ClaimResponseURL(ctx, "bot", id, now)
		must(t, err)
		return ok
	}

	// Concurrent claims: exactly one wins.
	const n = 10
	var (
		wg   sync.WaitGroup
		wins atomic.Int32
	)
	at := t0.Add(30 * time.Minute)
	for range n {
		wg.Go(func() {
			ok, err := db.ClaimResponseURL(ctx, "bot", "s1", at)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Errorf("%d claims won, want exactly 1", got)
	}
	s, err := db.GetAIBotStream(ctx, "bot", "s1")
	must(t, err)
	sameTime(t, "response_used_at", s.ResponseUsedAt, at)
	if claim("s1", at.Add(time.Minute)) {
		t.Error("a used response_url was claimed again")
	}

	if !claim("edge", t0.Add(ResponseURLLifetime)) {
		t.Error("a response_url exactly 1 h old could not be claimed")
	}
	if claim("old", t0.Add(ResponseURLLifetime+time.Millisecond)) {
		t.Error("an expired response_url was claimed")
	}
	if s, _ := db.GetAIBotStream(ctx, "bot", "old"); !s.ResponseUsedAt.IsZero() {
		t.Error("a refused claim marked the response_url used")
	}
	if claim("ws", t0) {
		t.Error("a stream without response_url was claimed")
	}
	if _, err := db.ClaimResponseURL(ctx, "bot", "nope", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("claim of an unknown stream err = %v, want ErrNotFound", err)
	}
}

func TestAIBotStreamPrune(t *testing.T) { eachDriver(t, testAIBotStreamPrune) }

func testAIBotStreamPrune(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	done := insertMsg(t, db, "bot", "u", "done")
	answer(t, db, done)
	newStream(t, db, "done", done)
	open := insertMsg(t, db, "bot", "u", "open") // still received: kept with its stream
	newStream(t, db, "open", open)
	orphan := AIBotStream{Bot: "bot", StreamID: "orphan", MessageID: 9999}
	if _, _, err := db.CreateAIBotStream(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	clk.Advance(48 * time.Hour)
	recent := AIBotStream{Bot: "bot", StreamID: "recent-orphan", MessageID: 9998}
	if _, _, err := db.CreateAIBotStream(ctx, recent); err != nil {
		t.Fatal(err)
	}

	res, err := db.Prune(ctx, clk.now.Add(-24*time.Hour))
	must(t, err)
	if res.Messages != 1 || res.Streams != 2 {
		t.Errorf("Prune = %+v, want 1 message and 2 streams", res)
	}
	for id, kept := range map[string]bool{"done": false, "orphan": false, "open": true, "recent-orphan": true} {
		_, err := db.GetAIBotStream(ctx, "bot", id)
		if kept && err != nil {
			t.Errorf("stream %s: %v, want it kept", id, err)
		}
		if !kept && !errors.Is(err, ErrNotFound) {
			t.Errorf("stream %s: err = %v, want it pruned", id, err)
		}
	}
}
