package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// MessageStreaming is the state of a message whose answer is still arriving
// from the LLM while its first parts are already in the outbox. Sending those
// parts does not finish the message (MarkSent finishes only answering ones);
// SaveAnswer does, with the rest of the answer.
const MessageStreaming = "streaming"

// PendingStates are the states of a message whose answer is not delivered
// yet, for the panel's counts and filters.
var PendingStates = []string{MessageReceived, MessageAnswering, MessageStreaming}

// insertParts stores parts of message id after the parts it has already,
// pending and due at now, in one statement written out (see SaveAnswer).
func insertParts(tx *gorm.DB, id int64, bot, user string, parts []string, now time.Time) error {
	var seq int
	if err := tx.Raw("SELECT COALESCE(MAX(seq) + 1, 0) FROM outbox WHERE message_id = ?", id).Scan(&seq).Error; err != nil {
		return err
	}
	var q strings.Builder
	q.WriteString("INSERT INTO outbox (message_id, bot, user_id, seq, content, state, attempts, next_attempt_at, wecom_msg_id, last_error, created_at, sent_at) VALUES ")
	args := make([]any, 0, 12*len(parts))
	for i, p := range parts {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?, 0, ?, '', '', ?, ?)")
		args = append(args, id, bot, user, seq+i, p, OutboxPending, now, now, time.Time{})
	}
	return tx.Exec(q.String(), args...).Error
}

// AppendParts stores parts of the answer to message id that is still being
// streamed, after the parts stored before, due now, and marks the message
// streaming. It returns ErrNotFound when the message is no longer being
// answered (its delivery failed meanwhile): the caller stops streaming. A
// message may still be received: on an exclusive database the pipeline
// does not mark it answering first (PipelineConfig.Exclusive).
func (d *DB) AppendParts(ctx context.Context, id int64, bot, user string, parts []string) error {
	if len(parts) == 0 {
		return nil
	}
	now := d.now()
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&messageRow{}).Where("id = ? AND state IN ?", id, PendingStates).
			Update("state", MessageStreaming)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return insertParts(tx, id, bot, user, parts, now)
	})
	if err != nil {
		return fmt.Errorf("storage: append parts to message %d: %w", id, err)
	}
	return nil
}
