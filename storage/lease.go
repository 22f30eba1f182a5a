package storage

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// A user lease says which instance answers a user's messages now. Messages
// are claimed per user, not one by one, so that a user's messages are
// answered in order and each sees the answer to the one before, whichever
// instance WeCom delivered them to. The lease lives in the database, not in
// process memory: when its owner dies it expires, and another instance takes
// the user's pending messages over.
type userLeaseRow struct {
	Bot       string    `gorm:"primaryKey;size:64"`
	UserID    string    `gorm:"primaryKey;size:255"`
	Owner     string    `gorm:"size:128;not null"`
	ExpiresAt time.Time `gorm:"not null;index"`
}

func (userLeaseRow) TableName() string { return "user_leases" }

// UserRef names a user of a bot.
type UserRef struct {
	Bot    string
	UserID string
}

// pendingMessage is the condition of a message still to be answered: never
// answered (received, or answering with nothing in the outbox: the answer was
// lost with its process) or cut off while streaming.
// The state comes first, so that a user's pending messages are found through
// (bot, user_id, state) without reading the user's answered history.
const pendingMessage = "(messages.state IN ('received', 'answering', 'streaming') AND (messages.state = 'streaming' OR NOT EXISTS " +
	"(SELECT 1 FROM outbox WHERE outbox.message_id = messages.id)))"

// ClaimUser takes or renews the lease on user's messages for owner until
// until. It succeeds when nobody holds the lease, when owner does, or when
// the holder's lease expired (at now); false means another live instance
// answers this user.
func (d *DB) ClaimUser(ctx context.Context, u UserRef, owner string, until time.Time) (bool, error) {
	res := d.db.WithContext(ctx).Exec(
		"INSERT INTO user_leases (bot, user_id, owner, expires_at) VALUES (?, ?, ?, ?) "+
			"ON CONFLICT (bot, user_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "+
			"WHERE user_leases.owner = excluded.owner OR user_leases.expires_at < ?",
		u.Bot, u.UserID, owner, utc(until), d.now())
	if res.Error != nil {
		return false, fmt.Errorf("storage: claim user %s/%s: %w", u.Bot, u.UserID, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// ReleaseUser gives up owner's lease on user if the user has no pending
// message left. False means either that one arrived (the caller goes on
// answering) or that the lease is not owner's any more. Checking and
// deleting in one statement is what keeps a message accepted by another
// instance, which saw the lease held and left the message to its owner, from
// being left to nobody.
func (d *DB) ReleaseUser(ctx context.Context, u UserRef, owner string) (bool, error) {
	res := d.db.WithContext(ctx).Exec(
		"DELETE FROM user_leases WHERE bot = ? AND user_id = ? AND owner = ? AND NOT EXISTS "+
			"(SELECT 1 FROM messages WHERE messages.bot = user_leases.bot AND messages.user_id = user_leases.user_id AND "+pendingMessage+")",
		u.Bot, u.UserID, owner)
	if res.Error != nil {
		return false, fmt.Errorf("storage: release user %s/%s: %w", u.Bot, u.UserID, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// DropUserLease gives up owner's lease on user whatever is pending (the
// owner stops answering the user: shutdown, or an error it cannot get past).
func (d *DB) DropUserLease(ctx context.Context, u UserRef, owner string) error {
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ? AND owner = ?", u.Bot, u.UserID, owner).
		Delete(&userLeaseRow{}).Error
	if err != nil {
		return fmt.Errorf("storage: drop lease of %s/%s: %w", u.Bot, u.UserID, err)
	}
	return nil
}

// DropLeases removes every lease not owned by keep: at the start of an
// instance on a database no other instance uses (SQLite), the leases found
// are its own previous run's, and waiting for them to expire would only
// delay the resume.
func (d *DB) DropLeases(ctx context.Context, keep string) error {
	if err := d.db.WithContext(ctx).Where("owner <> ?", keep).Delete(&userLeaseRow{}).Error; err != nil {
		return fmt.Errorf("storage: drop leases: %w", err)
	}
	return nil
}

// PendingMessages returns up to limit pending messages of user, oldest
// first. Read several at once, they are a snapshot: the caller answers
// them in order only where nothing else changes them meanwhile (one
// instance on the database).
func (d *DB) PendingMessages(ctx context.Context, u UserRef, limit int) ([]Message, error) {
	var rows []messageRow
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ?", u.Bot, u.UserID).Where(pendingMessage).
		Order("id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: pending messages of %s/%s: %w", u.Bot, u.UserID, err)
	}
	out := make([]Message, len(rows))
	for i, r := range rows {
		out[i] = r.message()
	}
	return out, nil
}

// UnclaimedUsers returns the users of the oldest pending messages after the
// message with id after that no live lease covers at now, those with the
// oldest message first: work accepted but not being answered by anyone
// (left by a run that stopped or died). It reads up to limit such messages,
// so it returns at most limit users, fewer when some have several of them;
// next is the id of the last message read when there may be more (read them
// with after = next), 0 when there are none.
//
// A page is read through idx_messages_state, which keeps each state's
// messages in id order: the received ones first, up to limit; then the
// answering and streaming ones up to the last of those (an answering
// message whose answer waits in the outbox is not pending, and is skipped
// on the way). In one query grouped by user, SQLite read every pending
// message at once: 49 ms on its one connection with 27,000 waiting (a
// flood's backlog), which the ingest waited for at every sweep; a page of
// 256 took 4.3–5.5 ms, most of it skipping the 3,000 answers before them
// waiting in the outbox (BenchmarkUnclaimedUsersBacklog). Target: ack p99
// < 50 ms over a backlog (BENCHMARKS.md, the flood row).
func (d *DB) UnclaimedUsers(ctx context.Context, now time.Time, after int64, limit int) (users []UserRef, next int64, err error) {
	type row struct {
		ID     int64
		Bot    string
		UserID string
	}
	read := func(state string, upTo int64) ([]row, error) {
		var rows []row
		q := d.db.WithContext(ctx).Table("messages").Select("messages.id AS id, messages.bot AS bot, messages.user_id AS user_id").
			Where("messages.state = ? AND messages.id > ?", state, after).Where(pendingMessage).
			Where("NOT EXISTS (SELECT 1 FROM user_leases l WHERE l.bot = messages.bot AND l.user_id = messages.user_id AND l.expires_at >= ?)", utc(now))
		if upTo > 0 {
			q = q.Where("messages.id <= ?", upTo)
		}
		err := q.Order("messages.id").Limit(limit).Scan(&rows).Error
		return rows, err
	}
	rows, err := read(MessageReceived, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list unclaimed users: %w", err)
	}
	var upTo int64 // the page ends at the last received message when there may be more
	if len(rows) == limit {
		upTo = rows[len(rows)-1].ID
	}
	for _, state := range []string{MessageAnswering, MessageStreaming} {
		more, err := read(state, upTo)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list unclaimed users: %w", err)
		}
		rows = append(rows, more...)
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.ID, b.ID) })
	if len(rows) >= limit {
		rows = rows[:limit]
		next = rows[limit-1].ID
	}
	seen := make(map[UserRef]bool, len(rows))
	for _, r := range rows {
		u := UserRef{Bot: r.Bot, UserID: r.UserID}
		if !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	return users, next, nil
}
