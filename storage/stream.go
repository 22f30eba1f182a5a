package storage

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// MessageStreaming is the state of a message whose answer is still arriving
// from the LLM while its first parts are already in the outbox. Sending those
// parts does not finish the message (MarkSent finishes only answering ones);
// SaveAnswer does, with the rest of the answer.
const MessageStreaming = "streaming"

// nextSeq is the sequence number the next part of message id gets.
func nextSeq(tx *gorm.DB, id int64) (int, error) {
	var next int
	err := tx.Model(&outboxRow{}).Select("COALESCE(MAX(seq) + 1, 0)").Where("message_id = ?", id).Scan(&next).Error
	return next, err
}

// AppendParts stores parts of the answer to message id that is still being
// streamed, after the parts stored before, due now, and marks the message
// streaming. It returns ErrNotFound when the message is no longer being
// answered (its delivery failed meanwhile): the caller stops streaming.
func (d *DB) AppendParts(ctx context.Context, id int64, bot, user string, parts []string) error {
	if len(parts) == 0 {
		return nil
	}
	now := d.now()
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&messageRow{}).Where("id = ? AND state IN ?", id, []string{MessageAnswering, MessageStreaming}).
			Update("state", MessageStreaming)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		seq, err := nextSeq(tx, id)
		if err != nil {
			return err
		}
		rows := make([]outboxRow, len(parts))
		for i, p := range parts {
			rows[i] = outboxRow{
				MessageID: id, Bot: bot, UserID: user, Seq: seq + i, Content: p,
				State: OutboxPending, NextAttemptAt: now, CreatedAt: now,
			}
		}
		return tx.Create(&rows).Error
	})
	if err != nil {
		return fmt.Errorf("storage: append parts to message %d: %w", id, err)
	}
	return nil
}
