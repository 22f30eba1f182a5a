package storage

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// pruneBatch bounds the rows one Prune transaction deletes, so that the
// single connection is never held long: inbound callbacks wait on it.
const pruneBatch = 500

// PruneResult counts what Prune deleted.
type PruneResult struct {
	Messages int64 // finished messages (answered, failed, ignored)
	Outbox   int64 // sent or failed reply parts
	Turns    int64 // conversation turns
	Streams  int64 // AI bot answer streams of deleted messages
	Media    int64 // images of deleted messages
}

// Prune deletes what a long-running service no longer needs, in batches of
// at most pruneBatch rows per transaction:
//
//   - messages in a final state (answered, failed, ignored) received before
//     before, with their sent or failed outbox parts. Their dedupe keys go
//     with them: WeCom retries a callback within seconds, so a retention of
//     days never lets a retry through. So do their AI bot streams (and
//     streams whose message is gone, created before before): WeCom stops
//     polling 6 minutes after the message. So do their images (and images
//     whose message is gone, stored before before). Messages still received or
//     answering, and messages with a pending part, are kept whatever their
//     age;
//   - sent or failed parts answering no message (admin sends) created
//     before before;
//   - conversation turns created before before: the history the model sees
//     is the recent one.
//
// What was deleted before an error (or before ctx ended) stays deleted and is
// counted.
func (d *DB) Prune(ctx context.Context, before time.Time) (PruneResult, error) {
	var res PruneResult
	before = utc(before)
	db := d.db.WithContext(ctx)
	final := []string{MessageAnswered, MessageFailed, MessageIgnored}
	settled := []string{OutboxSent, OutboxFailed}

	// Finished messages and their parts.
	for {
		var ids []int64
		err := db.Model(&messageRow{}).
			Where("state IN ? AND received_at < ?", final, before).
			Where("NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_id = messages.id AND outbox.state = ?)", OutboxPending).
			Order("id").Limit(pruneBatch).Pluck("id", &ids).Error
		if err != nil {
			return res, fmt.Errorf("storage: prune messages: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		var parts, msgs, streams, media int64
		err = db.Transaction(func(tx *gorm.DB) error {
			r := tx.Where("message_id IN ? AND state IN ?", ids, settled).Delete(&outboxRow{})
			if r.Error != nil {
				return r.Error
			}
			parts = r.RowsAffected
			// The state is checked again: a message can have been retried
			// (RetryMessage) since it was listed.
			r = tx.Where("id IN ? AND state IN ?", ids, final).
				Where("NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_id = messages.id)").
				Delete(&messageRow{})
			if r.Error != nil {
				return r.Error
			}
			msgs = r.RowsAffected
			// Only the streams of the messages actually deleted.
			r = tx.Where("message_id IN ?", ids).
				Where("NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = aibot_streams.message_id)").
				Delete(&aibotStreamRow{})
			if r.Error != nil {
				return r.Error
			}
			streams = r.RowsAffected
			r = tx.Where("message_id IN ?", ids).
				Where("NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = message_media.message_id)").
				Delete(&messageMediaRow{})
			media = r.RowsAffected
			return r.Error
		})
		if err != nil {
			return res, fmt.Errorf("storage: prune messages: %w", err)
		}
		res.Outbox += parts
		res.Messages += msgs
		res.Streams += streams
		res.Media += media
		if len(ids) < pruneBatch {
			break
		}
	}

	// Parts of admin sends, and parts whose message is gone.
	n, err := d.pruneIDs(ctx, &outboxRow{}, func(q *gorm.DB) *gorm.DB {
		return q.Where("state IN ? AND created_at < ?", settled, before).
			Where("(message_id = 0 OR NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = outbox.message_id))")
	})
	res.Outbox += n
	if err != nil {
		return res, fmt.Errorf("storage: prune outbox: %w", err)
	}

	// Streams whose message is gone another way.
	n, err = d.pruneIDs(ctx, &aibotStreamRow{}, func(q *gorm.DB) *gorm.DB {
		return q.Where("created_at < ?", before).
			Where("NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = aibot_streams.message_id)")
	})
	res.Streams += n
	if err != nil {
		return res, fmt.Errorf("storage: prune streams: %w", err)
	}

	// Images whose message is gone another way.
	n, err = d.pruneIDs(ctx, &messageMediaRow{}, func(q *gorm.DB) *gorm.DB {
		return q.Where("created_at < ?", before).
			Where("NOT EXISTS (SELECT 1 FROM messages WHERE messages.id = message_media.message_id)")
	})
	res.Media += n
	if err != nil {
		return res, fmt.Errorf("storage: prune media: %w", err)
	}

	n, err = d.pruneIDs(ctx, &turnRow{}, func(q *gorm.DB) *gorm.DB {
		return q.Where("created_at < ?", before)
	})
	res.Turns += n
	if err != nil {
		return res, fmt.Errorf("storage: prune turns: %w", err)
	}
	return res, nil
}

// pruneIDs deletes the rows of model that where selects, pruneBatch at a
// time, and returns how many it deleted.
func (d *DB) pruneIDs(ctx context.Context, model any, where func(*gorm.DB) *gorm.DB) (int64, error) {
	var total int64
	for {
		var ids []int64
		if err := where(d.db.WithContext(ctx).Model(model)).Order("id").Limit(pruneBatch).Pluck("id", &ids).Error; err != nil {
			return total, err
		}
		if len(ids) == 0 {
			return total, nil
		}
		r := d.db.WithContext(ctx).Where("id IN ?", ids).Delete(model)
		total += r.RowsAffected
		if r.Error != nil {
			return total, r.Error
		}
		if len(ids) < pruneBatch {
			return total, nil
		}
	}
}
