package storage

import (
	"context"
	"fmt"
	"slices"
	"time"
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

// ResetConversation forgets the conversation of user with bot.
func (d *DB) ResetConversation(ctx context.Context, bot, user string) error {
	if err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ?", bot, user).Delete(&turnRow{}).Error; err != nil {
		return fmt.Errorf("storage: reset conversation %s/%s: %w", bot, user, err)
	}
	return nil
}
