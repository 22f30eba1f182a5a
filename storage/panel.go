package storage

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// The admin panel's read queries. They are plain SELECTs with portable SQL:
// no date functions (grouping by hour is done in Go, on UTC times), and no
// aggregate over a time column, whose type SQLite's driver loses.

// MessageCounts are the messages received in a period, by what became of them.
type MessageCounts struct {
	Received int64 // all of them, events included
	Answered int64
	Failed   int64
	Pending  int64 // received, answering or streaming: the answer is not delivered yet
	Ignored  int64 // events that need no answer
}

// CountMessages counts the messages received since since, by state.
func (d *DB) CountMessages(ctx context.Context, since time.Time) (MessageCounts, error) {
	var rows []struct {
		State string
		N     int64
	}
	err := d.db.WithContext(ctx).Model(&messageRow{}).Select("state, COUNT(*) AS n").
		Where("received_at >= ?", utc(since)).Group("state").Scan(&rows).Error
	if err != nil {
		return MessageCounts{}, fmt.Errorf("storage: count messages: %w", err)
	}
	var c MessageCounts
	for _, r := range rows {
		c.Received += r.N
		switch r.State {
		case MessageAnswered:
			c.Answered += r.N
		case MessageFailed:
			c.Failed += r.N
		case MessageReceived, MessageAnswering, MessageStreaming: // PendingStates
			c.Pending += r.N
		case MessageIgnored:
			c.Ignored += r.N
		}
	}
	return c, nil
}

// HourCount is the activity of one hour.
type HourCount struct {
	Start    time.Time // UTC, on the hour
	Messages int       // messages received in the hour
	Answers  int       // messages whose answer was completed in the hour
}

// HourlyActivity returns the activity of the last `hours` hours up to now,
// oldest first; the last entry is the hour now is in.
func (d *DB) HourlyActivity(ctx context.Context, now time.Time, hours int) ([]HourCount, error) {
	if hours <= 0 {
		return nil, nil
	}
	start := now.UTC().Truncate(time.Hour).Add(-time.Duration(hours-1) * time.Hour)
	out := make([]HourCount, hours)
	for i := range out {
		out[i].Start = start.Add(time.Duration(i) * time.Hour)
	}
	bucket := func(t time.Time) int {
		if t.Before(start) {
			return -1
		}
		i := int(t.Sub(start) / time.Hour)
		if i >= hours {
			return -1
		}
		return i
	}
	var received, answered []time.Time
	q := d.db.WithContext(ctx).Model(&messageRow{})
	if err := q.Where("received_at >= ?", start).Pluck("received_at", &received).Error; err != nil {
		return nil, fmt.Errorf("storage: hourly activity: %w", err)
	}
	q = d.db.WithContext(ctx).Model(&messageRow{})
	if err := q.Where("state = ? AND answered_at >= ?", MessageAnswered, start).Pluck("answered_at", &answered).Error; err != nil {
		return nil, fmt.Errorf("storage: hourly activity: %w", err)
	}
	for _, t := range received {
		if i := bucket(t); i >= 0 {
			out[i].Messages++
		}
	}
	for _, t := range answered {
		if i := bucket(t); i >= 0 {
			out[i].Answers++
		}
	}
	return out, nil
}

// UserSummary is one user of a bot as the conversation list shows it.
type UserSummary struct {
	UserID   string
	Last     Message // the user's latest message
	Messages int64   // messages of the user to the bot, events included
}

// ConversationUsers returns up to limit users who wrote to bot, the most
// recently active first.
func (d *DB) ConversationUsers(ctx context.Context, bot string, limit int) ([]UserSummary, error) {
	db := d.db.WithContext(ctx)
	var last []messageRow
	latest := db.Model(&messageRow{}).Select("MAX(id)").Where("bot = ?", bot).Group("user_id")
	if err := db.Where("id IN (?)", latest).Order("id DESC").Limit(limitOrAll(limit)).Find(&last).Error; err != nil {
		return nil, fmt.Errorf("storage: users of %s: %w", bot, err)
	}
	if len(last) == 0 {
		return nil, nil
	}
	users := make([]string, len(last))
	for i, r := range last {
		users[i] = r.UserID
	}
	var counts []struct {
		UserID string
		N      int64
	}
	err := db.Model(&messageRow{}).Select("user_id, COUNT(*) AS n").
		Where("bot = ? AND user_id IN ?", bot, users).Group("user_id").Scan(&counts).Error
	if err != nil {
		return nil, fmt.Errorf("storage: users of %s: %w", bot, err)
	}
	n := make(map[string]int64, len(counts))
	for _, c := range counts {
		n[c.UserID] = c.N
	}
	out := make([]UserSummary, len(last))
	for i, r := range last {
		out[i] = UserSummary{UserID: r.UserID, Last: r.message(), Messages: n[r.UserID]}
	}
	return out, nil
}

// Conversation returns the last limit turns of the conversation of user with
// bot, oldest first. Unlike History it keeps every turn as stored.
func (d *DB) Conversation(ctx context.Context, bot, user string, limit int) ([]Turn, error) {
	var rows []turnRow
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ?", bot, user).
		Order("id DESC").Limit(limitOrAll(limit)).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: conversation %s/%s: %w", bot, user, err)
	}
	slices.Reverse(rows)
	out := make([]Turn, len(rows))
	for i, r := range rows {
		out[i] = Turn{Role: r.Role, Content: r.Content, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// MessageFilter selects messages for LatestMessages; zero fields select all.
type MessageFilter struct {
	Bot      string
	UserID   string
	States   []string
	BeforeID int64   // only messages older than this one (paging)
	IDs      []int64 // only these messages (the panel refreshing its pending rows); none: all
	Limit    int
}

// MessageWithReply is an inbound message with the parts of its reply.
type MessageWithReply struct {
	Message
	Parts []OutboxPart
}

// LatestMessages returns the messages f selects, newest first, each with
// its reply parts in order.
func (d *DB) LatestMessages(ctx context.Context, f MessageFilter) ([]MessageWithReply, error) {
	db := d.db.WithContext(ctx)
	q := db.Model(&messageRow{})
	if f.Bot != "" {
		q = q.Where("bot = ?", f.Bot)
	}
	if f.UserID != "" {
		q = q.Where("user_id = ?", f.UserID)
	}
	if len(f.States) > 0 {
		q = q.Where("state IN ?", f.States)
	}
	if f.BeforeID > 0 {
		q = q.Where("id < ?", f.BeforeID)
	}
	if len(f.IDs) > 0 {
		q = q.Where("id IN ?", f.IDs)
	}
	var rows []messageRow
	if err := q.Order("id DESC").Limit(limitOrAll(f.Limit)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: latest messages: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var parts []outboxRow
	if err := db.Where("message_id IN ?", ids).Order("id").Find(&parts).Error; err != nil {
		return nil, fmt.Errorf("storage: latest messages: replies: %w", err)
	}
	byMsg := make(map[int64][]OutboxPart, len(rows))
	for _, p := range parts {
		byMsg[p.MessageID] = append(byMsg[p.MessageID], p.part())
	}
	out := make([]MessageWithReply, len(rows))
	for i, r := range rows {
		out[i] = MessageWithReply{Message: r.message(), Parts: byMsg[r.ID]}
	}
	return out, nil
}

// RecentSends returns up to limit outbox parts that answer no message (the
// admin's sends), newest first.
func (d *DB) RecentSends(ctx context.Context, limit int) ([]OutboxPart, error) {
	var rows []outboxRow
	if err := d.db.WithContext(ctx).Where("message_id = 0").Order("id DESC").Limit(limitOrAll(limit)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: recent sends: %w", err)
	}
	out := make([]OutboxPart, len(rows))
	for i, r := range rows {
		out[i] = r.part()
	}
	return out, nil
}

// limitOrAll turns "no limit" (0 or less) into GORM's -1: Limit(0) is LIMIT 0.
// GORM writes no LIMIT clause at all for a negative limit, so this is
// portable (LIMIT -1 itself is SQLite's and an error on Postgres).
func limitOrAll(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
