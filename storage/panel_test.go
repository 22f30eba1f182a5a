package storage

import (
	"slices"
	"testing"
	"time"
)

func TestCountMessages(t *testing.T) { eachDriver(t, testCountMessages) }

func testCountMessages(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	old := insertMsg(t, db, "b", "u1", "old") // before the period: not counted
	answer(t, db, old)
	clk.Advance(time.Hour)
	since := clk.Now()
	clk.Advance(time.Minute)
	a := insertMsg(t, db, "b", "u1", "answered")
	answer(t, db, a) // no parts: answered at once
	f := insertMsg(t, db, "b", "u2", "failed")
	must(t, db.SetMessageState(ctx, f.ID, MessageFailed, "llm: timeout"))
	insertMsg(t, db, "b", "u2", "received")
	w := insertMsg(t, db, "other", "u3", "answering")
	answer(t, db, w, "part")
	s := insertMsg(t, db, "b", "u4", "streaming")
	must(t, db.StartAnswer(ctx, s.ID))
	must(t, db.AppendParts(ctx, s.ID, "b", "u4", []string{"first part"}))
	e := insertMsg(t, db, "b", "u3", "event")
	must(t, db.SetMessageState(ctx, e.ID, MessageIgnored, ""))

	got, err := db.CountMessages(ctx, since)
	must(t, err)
	want := MessageCounts{Received: 6, Answered: 1, Failed: 1, Pending: 3, Ignored: 1}
	if got != want {
		t.Fatalf("CountMessages = %+v, want %+v", got, want)
	}
	// since in another zone is the same instant.
	got, err = db.CountMessages(ctx, since.In(time.FixedZone("CST", 8*3600)))
	must(t, err)
	if got != want {
		t.Fatalf("CountMessages with a CST since = %+v, want %+v", got, want)
	}
}

func TestHourlyActivity(t *testing.T) { eachDriver(t, testHourlyActivity) }

func testHourlyActivity(t *testing.T) {
	db, clk := newDB(t) // t0 is 12:00:00.5 UTC
	ctx := t.Context()
	at := func(d time.Duration, user, key string, answerAfter time.Duration) {
		clk.now = t0.Add(d)
		m := insertMsg(t, db, "b", user, key)
		if answerAfter >= 0 {
			clk.now = clk.now.Add(answerAfter)
			answer(t, db, m)
		}
	}
	at(-25*time.Hour, "u", "too old", 0)
	at(-23*time.Hour, "u", "first hour", 2*time.Hour)             // received at 13:00 yesterday, answered at 15:00
	at(-30*time.Minute, "u", "last hour but one", 40*time.Minute) // answered at 12:10
	at(0, "u", "this hour", -1)                                   // never answered
	at(20*time.Minute, "u", "this hour too", time.Minute)

	now := t0.Add(30 * time.Minute).In(time.FixedZone("CST", 8*3600))
	hours, err := db.HourlyActivity(ctx, now, 24)
	must(t, err)
	if len(hours) != 24 {
		t.Fatalf("%d hours, want 24", len(hours))
	}
	first := time.Date(2025, 2, 28, 13, 0, 0, 0, time.UTC)
	sameTime(t, "first hour", hours[0].Start, first)
	sameTime(t, "last hour", hours[23].Start, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	if hours[0].Start.Location() != time.UTC {
		t.Errorf("hours are in %v, want UTC", hours[0].Start.Location())
	}
	want := map[int][2]int{0: {1, 0}, 2: {0, 1}, 22: {1, 0}, 23: {2, 2}}
	for i, h := range hours {
		w := want[i]
		if h.Messages != w[0] || h.Answers != w[1] {
			t.Errorf("hour %d (%s): %d messages, %d answers; want %d, %d", i, h.Start.Format("15:04"), h.Messages, h.Answers, w[0], w[1])
		}
	}
	if h, err := db.HourlyActivity(ctx, now, 0); err != nil || h != nil {
		t.Fatalf("0 hours: %v, %v", h, err)
	}
}

func TestConversationUsers(t *testing.T) { eachDriver(t, testConversationUsers) }

func testConversationUsers(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	insertMsg(t, db, "b", "alice", "1")
	clk.Advance(time.Minute)
	insertMsg(t, db, "b", "bob", "2")
	clk.Advance(time.Minute)
	insertMsg(t, db, "other", "carol", "3")
	clk.Advance(time.Minute)
	last := insertMsg(t, db, "b", "alice", "4")

	users, err := db.ConversationUsers(ctx, "b", 10)
	must(t, err)
	if len(users) != 2 || users[0].UserID != "alice" || users[1].UserID != "bob" {
		t.Fatalf("users %+v, want alice then bob", users)
	}
	if users[0].Messages != 2 || users[1].Messages != 1 {
		t.Errorf("message counts %d, %d; want 2, 1", users[0].Messages, users[1].Messages)
	}
	if users[0].Last.ID != last.ID || users[0].Last.Content != "q 4" {
		t.Errorf("alice's last message %+v, want %+v", users[0].Last, last)
	}
	sameTime(t, "alice's last message time", users[0].Last.ReceivedAt, t0.Add(3*time.Minute))
	sameTime(t, "bob's last message time", users[1].Last.ReceivedAt, t0.Add(time.Minute))

	users, err = db.ConversationUsers(ctx, "b", 1)
	must(t, err)
	if len(users) != 1 || users[0].UserID != "alice" {
		t.Fatalf("limit 1: %+v", users)
	}
	users, err = db.ConversationUsers(ctx, "nobody", 10)
	must(t, err)
	if len(users) != 0 {
		t.Fatalf("unknown bot: %+v", users)
	}
}

func TestConversation(t *testing.T) { eachDriver(t, testConversation) }

func testConversation(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	say(t, db, "b", "u", "q1", "a1")
	clk.Advance(time.Minute)
	say(t, db, "b", "u", "q2", "a2")
	say(t, db, "b", "other", "x", "y")

	turns, err := db.Conversation(ctx, "b", "u", 0)
	must(t, err)
	if got := contents(turns); got != "u:q1 a:a1 u:q2 a:a2" {
		t.Fatalf("conversation %q", got)
	}
	sameTime(t, "first turn", turns[0].CreatedAt, t0)
	sameTime(t, "last turn", turns[3].CreatedAt, t0.Add(time.Minute))
	// A limit keeps the newest turns, even when it cuts a pair.
	turns, err = db.Conversation(ctx, "b", "u", 3)
	must(t, err)
	if got := contents(turns); got != "a:a1 u:q2 a:a2" {
		t.Fatalf("last 3 turns %q", got)
	}
	must(t, db.ResetConversation(ctx, "b", "u"))
	turns, err = db.Conversation(ctx, "b", "u", 0)
	must(t, err)
	if len(turns) != 0 {
		t.Fatalf("after reset: %q", contents(turns))
	}
}

func TestLatestMessages(t *testing.T) { eachDriver(t, testLatestMessages) }

func testLatestMessages(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	a := insertMsg(t, db, "b", "alice", "1")
	answer(t, db, a, "p1", "p2")
	sendAll(t, db, "p1", "p2")
	clk.Advance(time.Second)
	f := insertMsg(t, db, "b", "bob", "2")
	answer(t, db, f, "doomed")
	must(t, db.FailPart(ctx, partID(t, db, "doomed"), "wecom: errcode 40003"))
	p := insertMsg(t, db, "other", "alice", "3")
	must(t, db.EnqueueText(ctx, "b", "alice", []string{"admin text"})) // answers no message

	ids := func(ms []MessageWithReply) []int64 {
		out := make([]int64, len(ms))
		for i, m := range ms {
			out[i] = m.ID
		}
		return out
	}
	cases := []struct {
		name string
		f    MessageFilter
		want []int64
	}{
		{"all", MessageFilter{}, []int64{p.ID, f.ID, a.ID}},
		{"bot", MessageFilter{Bot: "b"}, []int64{f.ID, a.ID}},
		{"user", MessageFilter{UserID: "alice"}, []int64{p.ID, a.ID}},
		{"bot and user", MessageFilter{Bot: "b", UserID: "alice"}, []int64{a.ID}},
		{"failed", MessageFilter{States: []string{MessageFailed}}, []int64{f.ID}},
		{"pending", MessageFilter{States: []string{MessageReceived, MessageAnswering}}, []int64{p.ID}},
		{"limit", MessageFilter{Limit: 2}, []int64{p.ID, f.ID}},
		{"before", MessageFilter{BeforeID: f.ID}, []int64{a.ID}},
		{"ids", MessageFilter{IDs: []int64{a.ID, p.ID}}, []int64{p.ID, a.ID}},
		{"nothing", MessageFilter{Bot: "nobody"}, []int64{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := db.LatestMessages(ctx, c.f)
			must(t, err)
			if g := ids(got); !slices.Equal(g, c.want) {
				t.Fatalf("ids %v, want %v", g, c.want)
			}
		})
	}

	all, err := db.LatestMessages(ctx, MessageFilter{})
	must(t, err)
	byID := map[int64]MessageWithReply{}
	for _, m := range all {
		byID[m.ID] = m
	}
	ans := byID[a.ID]
	if ans.State != MessageAnswered || len(ans.Parts) != 2 || ans.Parts[0].Content != "p1" || ans.Parts[1].Content != "p2" ||
		ans.Parts[0].State != OutboxSent {
		t.Errorf("answered message %+v", ans)
	}
	fail := byID[f.ID]
	if fail.State != MessageFailed || fail.Error != "wecom: errcode 40003" || len(fail.Parts) != 1 ||
		fail.Parts[0].State != OutboxFailed || fail.Parts[0].LastError != "wecom: errcode 40003" {
		t.Errorf("failed message %+v", fail)
	}
	if pend := byID[p.ID]; len(pend.Parts) != 0 || pend.State != MessageReceived {
		t.Errorf("pending message %+v", pend)
	}
}

func TestRecentSends(t *testing.T) { eachDriver(t, testRecentSends) }

func testRecentSends(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := insertMsg(t, db, "b", "alice", "1")
	answer(t, db, m, "an answer")
	must(t, db.EnqueueText(ctx, "b", "alice", []string{"first"}))
	clk.Advance(time.Second)
	must(t, db.EnqueueText(ctx, "b", "bob", []string{"second a", "second b"}))

	sends, err := db.RecentSends(ctx, 10)
	must(t, err)
	var got []string
	for _, s := range sends {
		got = append(got, s.UserID+":"+s.Content)
	}
	if want := []string{"bob:second b", "bob:second a", "alice:first"}; !slices.Equal(got, want) {
		t.Fatalf("sends %v, want %v", got, want)
	}
	sameTime(t, "newest send", sends[0].CreatedAt, t0.Add(time.Second))
	sends, err = db.RecentSends(ctx, 1)
	must(t, err)
	if len(sends) != 1 {
		t.Fatalf("limit 1: %d sends", len(sends))
	}
}
