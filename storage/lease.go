package storage

import (
	"context"
	"fmt"
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

// UnclaimedUsers returns up to limit users with pending messages and no live
// lease at now, those with the oldest pending message first: work accepted
// but not being answered by anyone (left by a run that stopped or died).
func (d *DB) UnclaimedUsers(ctx context.Context, now time.Time, limit int) ([]UserRef, error) {
	var rows []UserRef
	err := d.db.WithContext(ctx).Table("messages").Select("messages.bot AS bot, messages.user_id AS user_id").
		Where(pendingMessage).
		Where("NOT EXISTS (SELECT 1 FROM user_leases l WHERE l.bot = messages.bot AND l.user_id = messages.user_id AND l.expires_at >= ?)", utc(now)).
		Group("messages.bot, messages.user_id").Order("MIN(messages.id)").Limit(limit).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: list unclaimed users: %w", err)
	}
	return rows, nil
}
