package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
)

// Conversation roles.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Turn is one message of a conversation between a user and a bot.
type Turn struct {
	Role      string
	Content   string
	CreatedAt time.Time
}

type turnRow struct {
	ID        int64  `gorm:"primaryKey;autoIncrement"`
	Bot       string `gorm:"size:64;not null;index:idx_turns_conv,priority:1"`
	UserID    string `gorm:"size:255;not null;index:idx_turns_conv,priority:2"`
	Role      string `gorm:"size:16;not null"`
	Content   string `gorm:"not null"`
	CreatedAt time.Time
}

func (turnRow) TableName() string { return "turns" }

// History returns the last `pairs` user/assistant pairs of the conversation
// of user with bot, oldest first. It reads and scans only the columns it
// returns, without GORM's reflection: it is read for every answer, on
// SQLite's one connection (see SaveAnswer).
func (d *DB) History(ctx context.Context, bot, user string, pairs int) ([]Turn, error) {
	if pairs <= 0 {
		return nil, nil
	}
	rows, err := d.db.WithContext(ctx).Raw("SELECT role, content, created_at FROM turns WHERE bot = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
		bot, user, 2*pairs).Rows()
	if err != nil {
		return nil, fmt.Errorf("storage: history of %s/%s: %w", bot, user, err)
	}
	defer rows.Close()
	out := make([]Turn, 0, 2*pairs)
	for rows.Next() {
		var t Turn
		if err := rows.Scan(&t.Role, &t.Content, &t.CreatedAt); err != nil {
			return nil, fmt.Errorf("storage: history of %s/%s: %w", bot, user, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: history of %s/%s: %w", bot, user, err)
	}
	slices.Reverse(out)
	// Turns are written in pairs; a limit that cut a pair leaves an
	// assistant turn first, which the model would read out of context.
	if len(out) > 0 && out[0].Role == RoleAssistant {
		out = out[1:]
	}
	return out, nil
}

// EventAdminReset is the event a reset from the admin panel is stored as:
// a message of the user, ignored (it needs no answer), so that the user's
// messages show where the model's context started afresh, as a /reset does.
const EventAdminReset = "admin_reset"

// ResetConversation forgets the conversation of user with bot, and stores
// the reset among the user's messages (EventAdminReset).
func (d *DB) ResetConversation(ctx context.Context, bot, user string) error {
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	row := messageRow{
		Bot: bot, DedupeKey: EventAdminReset + ":" + hex.EncodeToString(nonce[:]), UserID: user,
		MsgType: "event", Event: EventAdminReset, ReceivedAt: utc(d.now()), State: MessageIgnored,
	}
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("bot = ? AND user_id = ?", bot, user).Delete(&turnRow{}).Error; err != nil {
			return err
		}
		return tx.Create(&row).Error
	})
	if err != nil {
		return fmt.Errorf("storage: reset conversation %s/%s: %w", bot, user, err)
	}
	return nil
}
