package storage

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// say appends one user/assistant pair to the conversation of user with bot.
func say(t *testing.T, db *DB, bot, user, q, a string) {
	t.Helper()
	m := insertMsg(t, db, bot, user, bot+"/"+user+"/"+q)
	must(t, db.SaveAnswer(t.Context(), Answer{MessageID: m.ID, Bot: bot, UserID: user, UserTurn: q, AssistantTurn: a}))
}

// contents renders turns as "u:q1 a:a1 …".
func contents(turns []Turn) string {
	var b strings.Builder
	for i, tr := range turns {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%c:%s", tr.Role[0], tr.Content)
	}
	return b.String()
}

func TestHistory(t *testing.T) { eachDriver(t, testHistory) }

func testHistory(t *testing.T) {
	db, clk := newDB(t)
	for i := 1; i <= 3; i++ {
		clk.Advance(time.Minute)
		say(t, db, "bot", "u", fmt.Sprint("q", i), fmt.Sprint("a", i))
	}
	tests := []struct {
		pairs int
		want  string
	}{
		{-1, ""},
		{0, ""},
		{1, "u:q3 a:a3"},
		{2, "u:q2 a:a2 u:q3 a:a3"},
		{3, "u:q1 a:a1 u:q2 a:a2 u:q3 a:a3"},
		{10, "u:q1 a:a1 u:q2 a:a2 u:q3 a:a3"},
	}
	for _, tt := range tests {
		h, err := db.History(t.Context(), "bot", "u", tt.pairs)
		must(t, err)
		if got := contents(h); got != tt.want {
			t.Errorf("History(%d) = %q, want %q", tt.pairs, got, tt.want)
		}
	}
	h, err := db.History(t.Context(), "bot", "u", 1)
	must(t, err)
	for _, tr := range h {
		sameTime(t, "CreatedAt", tr.CreatedAt, clk.now)
	}
}

// TestHistoryNeverStartsWithAssistant covers a conversation that is not made
// of whole pairs (a user turn whose answer was never stored): the cut at
// 2*pairs would otherwise start with an assistant turn.
func TestHistoryNeverStartsWithAssistant(t *testing.T) {
	eachDriver(t, testHistoryNeverStartsWithAssistant)
}

func testHistoryNeverStartsWithAssistant(t *testing.T) {
	db, _ := newDB(t)
	say(t, db, "bot", "u", "q1", "a1")
	say(t, db, "bot", "u", "q2", "a2")
	must(t, db.db.Create(&turnRow{Bot: "bot", UserID: "u", Role: RoleUser, Content: "q3", CreatedAt: t0}).Error)
	tests := []struct {
		pairs int
		want  string
	}{
		{1, "u:q3"},           // a2 u:q3 → the assistant turn is dropped
		{2, "u:q2 a:a2 u:q3"}, // a1 … → dropped
		{3, "u:q1 a:a1 u:q2 a:a2 u:q3"},
	}
	for _, tt := range tests {
		h, err := db.History(t.Context(), "bot", "u", tt.pairs)
		must(t, err)
		if got := contents(h); got != tt.want {
			t.Errorf("History(%d) = %q, want %q", tt.pairs, got, tt.want)
		}
		if len(h) > 0 && h[0].Role == RoleAssistant {
			t.Errorf("History(%d) starts with an assistant turn", tt.pairs)
		}
	}
}

func TestHistoryIsolationAndReset(t *testing.T) { eachDriver(t, testHistoryIsolationAndReset) }

func testHistoryIsolationAndReset(t *testing.T) {
	db, _ := newDB(t)
	ctx := t.Context()
	say(t, db, "a", "u", "a-u", "1")
	say(t, db, "a", "v", "a-v", "2")
	say(t, db, "b", "u", "b-u", "3")
	want := map[[2]string]string{
		{"a", "u"}: "u:a-u a:1",
		{"a", "v"}: "u:a-v a:2",
		{"b", "u"}: "u:b-u a:3",
		{"b", "v"}: "",
	}
	check := func(stage string) {
		t.Helper()
		for k, w := range want {
			h, err := db.History(ctx, k[0], k[1], 5)
			must(t, err)
			if got := contents(h); got != w {
				t.Errorf("%s: History(%s, %s) = %q, want %q", stage, k[0], k[1], got, w)
			}
		}
	}
	check("start")

	must(t, db.ResetConversation(ctx, "a", "u"))
	want[[2]string{"a", "u"}] = ""
	check("after reset of a/u")

	// The reset is kept among a/u's messages, as an ignored event; twice
	// at the same instant is two resets.
	must(t, db.ResetConversation(ctx, "a", "u"))
	msgs, err := db.LatestMessages(ctx, MessageFilter{Bot: "a", UserID: "u"})
	must(t, err)
	resets := 0
	for _, m := range msgs {
		if m.Event == EventAdminReset {
			resets++
			if m.MsgType != "event" || m.State != MessageIgnored {
				t.Errorf("reset stored as %+v", m.Message)
			}
		}
	}
	if resets != 2 {
		t.Errorf("%d resets stored, want 2", resets)
	}
	must(t, db.ResetConversation(ctx, "nobody", "u")) // nothing to forget is fine
	say(t, db, "a", "u", "again", "4")
	want[[2]string{"a", "u"}] = "u:again a:4"
	check("after a new pair")
}
