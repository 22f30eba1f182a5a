package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Message states. A message is stored as received before WeCom's callback is
// acknowledged; it is answering while the pipeline works on it and while its
// reply parts wait in the outbox; answered once every part was delivered.
const (
	MessageReceived  = "received"
	MessageAnswering = "answering"
	MessageAnswered  = "answered"
	MessageFailed    = "failed"
	// MessageIgnored is an accepted message that needs no reply (most events).
	MessageIgnored = "ignored"
)

// Message is one inbound message (or event) of a user to a bot.
type Message struct {
	ID        int64
	Bot       string
	DedupeKey string // MsgId, or user+CreateTime+Event for events
	UserID    string
	MsgType   string
	Event     string
	Content   string
	// Media names the message's images for the channel that downloads
	// them (its own JSON: media ids, or URLs with their keys); "" when it
	// has none. Never shown.
	Media      string
	CreateTime int64 // WeCom's CreateTime, seconds
	ReceivedAt time.Time
	State      string
	Error      string
	Attempts   int
	AnsweredAt time.Time
}

type messageRow struct {
	ID         int64  `gorm:"primaryKey;autoIncrement"`
	Bot        string `gorm:"size:64;not null;uniqueIndex:idx_messages_dedupe,priority:1;index:idx_messages_user_state,priority:1"`
	DedupeKey  string `gorm:"size:255;not null;uniqueIndex:idx_messages_dedupe,priority:2"`
	UserID     string `gorm:"size:255;not null;index:idx_messages_user_state,priority:2"`
	MsgType    string `gorm:"size:32;not null"`
	Event      string `gorm:"size:64"`
	Content    string
	Media      string
	CreateTime int64
	ReceivedAt time.Time `gorm:"index"`
	State      string    `gorm:"size:16;not null;index;index:idx_messages_user_state,priority:3"`
	Error      string
	Attempts   int `gorm:"not null;default:0"`
	AnsweredAt time.Time
}

func (messageRow) TableName() string { return "messages" }

func (r messageRow) message() Message {
	return Message(r)
}

// InsertMessage stores m unless a message of the same bot with the same dedupe
// key is already stored. It reports whether m was new; on true m.ID is set.
// The unique key makes the dedupe survive restarts and races alike.
// Concurrent inserts are committed together (see ingest).
func (d *DB) InsertMessage(ctx context.Context, m *Message) (bool, error) {
	if m.Bot == "" || m.DedupeKey == "" {
		return false, errors.New("storage: insert message: bot and dedupe key are required")
	}
	if m.State == "" {
		m.State = MessageReceived
	}
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = d.now()
	}
	row := messageRow{
		Bot: m.Bot, DedupeKey: m.DedupeKey, UserID: m.UserID, MsgType: m.MsgType, Event: m.Event,
		Content: m.Content, Media: m.Media, CreateTime: m.CreateTime, ReceivedAt: utc(m.ReceivedAt), State: m.State,
	}
	id, err := d.ingest.insert(ctx, row)
	if err != nil || id == 0 {
		return false, err
	}
	m.ID = id
	return true, nil
}

// GetMessage returns the message with id, or ErrNotFound.
func (d *DB) GetMessage(ctx context.Context, id int64) (Message, error) {
	var rows []messageRow
	if err := d.db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&rows).Error; err != nil {
		return Message{}, fmt.Errorf("storage: get message %d: %w", id, err)
	}
	if len(rows) == 0 {
		return Message{}, ErrNotFound
	}
	return rows[0].message(), nil
}

// StartAnswer marks message id as being answered and counts the attempt.
func (d *DB) StartAnswer(ctx context.Context, id int64) error {
	// A message dropped meanwhile (DropUnanswered) stays dropped; its
	// answer is then not stored (SaveAnswer).
	err := d.db.WithContext(ctx).Model(&messageRow{}).Where("id = ? AND state <> ?", id, MessageIgnored).
		Updates(map[string]any{"state": MessageAnswering, "attempts": gorm.Expr("attempts + 1")}).Error
	if err != nil {
		return fmt.Errorf("storage: start answer %d: %w", id, err)
	}
	return nil
}

// SetMessageState sets the state of message id, with a reason for failures.
func (d *DB) SetMessageState(ctx context.Context, id int64, state, reason string) error {
	upd := map[string]any{"state": state, "error": reason}
	if state == MessageAnswered {
		upd["answered_at"] = d.now()
	}
	if err := d.db.WithContext(ctx).Model(&messageRow{}).Where("id = ?", id).Updates(upd).Error; err != nil {
		return fmt.Errorf("storage: set state of message %d: %w", id, err)
	}
	return nil
}

// Answer is what the pipeline produced for one message: the conversation
// turns to append and the reply parts to deliver, stored in one transaction so
// a crash leaves either all of it or none.
type Answer struct {
	MessageID int64
	Bot       string
	UserID    string
	// ResetConversation clears the user's history first (/reset).
	ResetConversation bool
	// UserTurn and AssistantTurn, when both are set, are appended to the
	// conversation.
	UserTurn, AssistantTurn string
	// Parts are delivered in order. No parts: the message is answered now.
	Parts []string
	// Failure, when set, says why the parts are a failure notice rather
	// than an answer: the message ends failed, with this reason.
	Failure string
}

// SaveAnswer stores a and moves the message on: answering while parts wait
// in the outbox, answered when there are none. A message dropped while it
// was answered (ignored: withdrawn by the customer) stays as it is and
// nothing of a is stored: ErrDropped. Its statements are written
// out rather than built by GORM: on SQLite the transaction holds the one
// connection the ingest waits for, and building and scanning them through
// GORM took as long as SQLite ran them (BenchmarkAnswerPath). Target: ack
// p99 < 50 ms under a flood, with answers going on (BENCHMARKS.md).
func (d *DB) SaveAnswer(ctx context.Context, a Answer) error {
	now := d.now()
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Parts streamed before (AppendParts) come first; the message
		// stays answering while any of them is unsent.
		pending := len(a.Parts) > 0
		if !pending {
			var n int64
			if err := tx.Raw("SELECT COUNT(*) FROM outbox WHERE message_id = ? AND state = ?", a.MessageID, OutboxPending).Scan(&n).Error; err != nil {
				return err
			}
			pending = n > 0
		}
		// The message first: a message dropped meanwhile (DropUnanswered)
		// keeps its state, and nothing of the answer is stored. The update
		// locks the row until the end, so a drop cannot come in between.
		var res *gorm.DB
		switch {
		case pending:
			res = tx.Exec("UPDATE messages SET state = ?, error = ? WHERE id = ? AND state <> ?", MessageAnswering, a.Failure, a.MessageID, MessageIgnored)
		case a.Failure != "":
			res = tx.Exec("UPDATE messages SET state = ?, error = ? WHERE id = ? AND state <> ?", MessageFailed, a.Failure, a.MessageID, MessageIgnored)
		default:
			res = tx.Exec("UPDATE messages SET state = ?, error = '', answered_at = ? WHERE id = ? AND state <> ?", MessageAnswered, now, a.MessageID, MessageIgnored)
		}
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrDropped
		}
		if a.ResetConversation {
			if err := tx.Exec("DELETE FROM turns WHERE bot = ? AND user_id = ?", a.Bot, a.UserID).Error; err != nil {
				return err
			}
		}
		if a.UserTurn != "" && a.AssistantTurn != "" {
			if err := tx.Exec("INSERT INTO turns (bot, user_id, role, content, created_at) VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
				a.Bot, a.UserID, RoleUser, a.UserTurn, now, a.Bot, a.UserID, RoleAssistant, a.AssistantTurn, now).Error; err != nil {
				return err
			}
		}
		if len(a.Parts) > 0 {
			return insertParts(tx, a.MessageID, a.Bot, a.UserID, a.Parts, now)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: save answer to message %d: %w", a.MessageID, err)
	}
	return nil
}
