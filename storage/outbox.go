package storage

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Outbox part states.
const (
	OutboxPending = "pending"
	OutboxSent    = "sent"
	OutboxFailed  = "failed"
)

// OutboxPart is one reply part waiting for (or done with) delivery. Parts of
// one user are delivered in id order: a part is due only when every earlier
// part of the same user is settled.
type OutboxPart struct {
	ID            int64
	MessageID     int64 // 0 for texts that answer no message (admin sends)
	Bot           string
	UserID        string
	Seq           int
	Content       string
	State         string
	Attempts      int
	NextAttemptAt time.Time
	WeComMsgID    string
	LastError     string
	CreatedAt     time.Time
	SentAt        time.Time
}

type outboxRow struct {
	ID            int64     `gorm:"primaryKey;autoIncrement"`
	MessageID     int64     `gorm:"not null;index"`
	Bot           string    `gorm:"size:64;not null;index:idx_outbox_user,priority:1"`
	UserID        string    `gorm:"size:255;not null;index:idx_outbox_user,priority:2"`
	Seq           int       `gorm:"not null"`
	Content       string    `gorm:"not null"`
	State         string    `gorm:"size:16;not null;index:idx_outbox_user,priority:3;index:idx_outbox_due,priority:1"`
	Attempts      int       `gorm:"not null;default:0"`
	NextAttemptAt time.Time `gorm:"index:idx_outbox_due,priority:2"`
	WeComMsgID    string    `gorm:"column:wecom_msg_id;size:128"`
	LastError     string
	CreatedAt     time.Time
	SentAt        time.Time
}

func (outboxRow) TableName() string { return "outbox" }

func (r outboxRow) part() OutboxPart {
	return OutboxPart(r)
}

// headOfUser keeps the pending parts that are the oldest pending part of
// their user: the only ones that may be sent now.
const headOfUser = "outbox.state = 'pending' AND outbox.id = (SELECT MIN(o2.id) FROM outbox o2 " +
	"WHERE o2.bot = outbox.bot AND o2.user_id = outbox.user_id AND o2.state = 'pending')"

// EnqueueText stores a text for user that answers no inbound message (a send
// from the admin), split into parts by the caller.
func (d *DB) EnqueueText(ctx context.Context, bot, user string, parts []string) error {
	if len(parts) == 0 {
		return nil // GORM refuses to create an empty slice
	}
	now := d.now()
	rows := make([]outboxRow, len(parts))
	for i, p := range parts {
		rows[i] = outboxRow{Bot: bot, UserID: user, Seq: i, Content: p, State: OutboxPending, NextAttemptAt: now, CreatedAt: now}
	}
	if err := d.db.WithContext(ctx).Create(&rows).Error; err != nil {
		return fmt.Errorf("storage: enqueue text for %s/%s: %w", bot, user, err)
	}
	return nil
}

// DueParts returns up to limit parts that may be sent at now: the oldest
// pending part of each user whose next attempt time has come, those due
// first first. That order is the one of idx_outbox_due, so the query reads
// pending parts only until it has limit heads of users; in id order it read
// every pending part and sorted them: 13-14 ms instead of 0.9 ms for 64 of
// 12,000 (BenchmarkDuePartsBacklog, a flood's backlog), on SQLite's one
// connection, which the ingest waits for. Target: ack p99 < 50 ms and
// answers going on under a flood (BENCHMARKS.md).
func (d *DB) DueParts(ctx context.Context, now time.Time, limit int) ([]OutboxPart, error) {
	var rows []outboxRow
	err := d.db.WithContext(ctx).Where(headOfUser).Where("outbox.next_attempt_at <= ?", utc(now)).
		Order("outbox.next_attempt_at, outbox.id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: list due outbox parts: %w", err)
	}
	out := make([]OutboxPart, len(rows))
	for i, r := range rows {
		out[i] = r.part()
	}
	return out, nil
}

// NextDue returns the earliest time a pending part becomes due, or false when
// nothing is pending.
func (d *DB) NextDue(ctx context.Context) (time.Time, bool, error) {
	var rows []outboxRow
	err := d.db.WithContext(ctx).Select("next_attempt_at").Where(headOfUser).
		Order("outbox.next_attempt_at").Limit(1).Find(&rows).Error
	if err != nil {
		return time.Time{}, false, fmt.Errorf("storage: next due outbox part: %w", err)
	}
	if len(rows) == 0 {
		return time.Time{}, false, nil
	}
	return rows[0].NextAttemptAt, true, nil
}

// CountPendingParts counts the parts waiting to be sent, of every bot
// (the metric wecombot_outbox_pending): a range of idx_outbox_due, whose
// first column is the state.
func (d *DB) CountPendingParts(ctx context.Context) (int64, error) {
	var n int64
	if err := d.db.WithContext(ctx).Model(&outboxRow{}).Where("state = ?", OutboxPending).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("storage: count pending outbox parts: %w", err)
	}
	return n, nil
}

// MarkSent records that WeCom accepted part id as wecomMsgID; when it was the
// last unsent part of its message, the message becomes answered (failed, if
// the parts were a failure notice). Two statements, on the path of every
// part sent.
func (d *DB) MarkSent(ctx context.Context, id int64, wecomMsgID string) error {
	now := d.now()
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The attempt was counted when it was made (ClaimPart), before the send.
		var msgIDs []int64
		if err := tx.Raw("UPDATE outbox SET state = ?, wecom_msg_id = ?, sent_at = ?, last_error = '' WHERE id = ? RETURNING message_id",
			OutboxSent, wecomMsgID, now, id).Scan(&msgIDs).Error; err != nil {
			return err
		}
		if len(msgIDs) == 0 {
			return ErrNotFound
		}
		if msgIDs[0] == 0 {
			return nil // a text that answers no message
		}
		// A message whose error is set got a failure notice, not an answer.
		return tx.Exec("UPDATE messages SET state = CASE WHEN error <> '' THEN ? ELSE ? END, "+
			"answered_at = CASE WHEN error <> '' THEN answered_at ELSE ? END "+
			"WHERE id = ? AND state = ? AND NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ? AND state = ?)",
			MessageFailed, MessageAnswered, now, msgIDs[0], MessageAnswering, msgIDs[0], OutboxPending).Error
	})
	if err != nil {
		return fmt.Errorf("storage: mark outbox part %d sent: %w", id, err)
	}
	return nil
}

// Reschedule delays part id to next, recording why; attempt says whether a
// send was actually tried (pacing delays are not attempts).
func (d *DB) Reschedule(ctx context.Context, id int64, next time.Time, reason string, attempt bool) error {
	upd := map[string]any{"next_attempt_at": utc(next), "last_error": reason}
	if attempt {
		upd["attempts"] = gorm.Expr("attempts + 1")
	}
	if err := d.db.WithContext(ctx).Model(&outboxRow{}).Where("id = ?", id).Updates(upd).Error; err != nil {
		return fmt.Errorf("storage: reschedule outbox part %d: %w", id, err)
	}
	return nil
}

// FailPart gives up part id and the parts of the same message after it, and
// marks the message failed with reason: a reply with a hole is not sent.
func (d *DB) FailPart(ctx context.Context, id int64, reason string) error {
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []outboxRow
		if err := tx.Where("id = ?", id).Limit(1).Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		p := rows[0]
		q := tx.Model(&outboxRow{}).Where("state = ?", OutboxPending)
		if p.MessageID != 0 {
			q = q.Where("message_id = ?", p.MessageID)
		} else {
			q = q.Where("id = ?", p.ID)
		}
		if err := q.Updates(map[string]any{"state": OutboxFailed, "last_error": reason}).Error; err != nil {
			return err
		}
		if p.MessageID == 0 {
			return nil
		}
		return tx.Model(&messageRow{}).Where("id = ?", p.MessageID).
			Updates(map[string]any{"state": MessageFailed, "error": reason}).Error
	})
	if err != nil {
		return fmt.Errorf("storage: fail outbox part %d: %w", id, err)
	}
	return nil
}

// PartsOf returns the outbox parts of message id in order.
func (d *DB) PartsOf(ctx context.Context, messageID int64) ([]OutboxPart, error) {
	var rows []outboxRow
	if err := d.db.WithContext(ctx).Where("message_id = ?", messageID).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: parts of message %d: %w", messageID, err)
	}
	out := make([]OutboxPart, len(rows))
	for i, r := range rows {
		out[i] = r.part()
	}
	return out, nil
}

// RetryMessage puts the failed parts of message id back in the outbox, due
// now, and the message back to answering (the admin's "re-send"). It returns
// ErrNotFound when the message has no failed part.
func (d *DB) RetryMessage(ctx context.Context, id int64) error {
	now := d.now()
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&outboxRow{}).Where("message_id = ? AND state = ?", id, OutboxFailed).
			Updates(map[string]any{"state": OutboxPending, "next_attempt_at": now, "created_at": now, "attempts": 0, "last_error": ""})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return tx.Model(&messageRow{}).Where("id = ?", id).
			Updates(map[string]any{"state": MessageAnswering, "error": ""}).Error
	})
	if err != nil {
		return fmt.Errorf("storage: retry message %d: %w", id, err)
	}
	return nil
}

// ClaimPart records a send attempt of part id before it is made, and moves
// its next attempt to retryAt in case this attempt never reports back (a
// crash). It succeeds only if the part is still pending with the attempt
// count the caller read, so two senders on one database never both send it.
func (d *DB) ClaimPart(ctx context.Context, id int64, attemptsSeen int, retryAt time.Time) (bool, error) {
	res := d.db.WithContext(ctx).Model(&outboxRow{}).
		Where("id = ? AND state = ? AND attempts = ?", id, OutboxPending, attemptsSeen).
		Updates(map[string]any{"attempts": gorm.Expr("attempts + 1"), "next_attempt_at": utc(retryAt), "last_error": "sending"})
	if res.Error != nil {
		return false, fmt.Errorf("storage: claim outbox part %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}
