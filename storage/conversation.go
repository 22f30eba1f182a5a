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
// of user with bot, oldest first.
func (d *DB) History(ctx context.Context, bot, user string, pairs int) ([]Turn, error) {
	if pairs <= 0 {
		return nil, nil
	}
	var rows []turnRow
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ?", bot, user).
		Order("id DESC").Limit(2 * pairs).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: history of %s/%s: %w", bot, user, err)
	}
	slices.Reverse(rows)
	// Turns are written in pairs; a limit that cut a pair leaves an
	// assistant turn first, which the model would read out of context.
	if len(rows) > 0 && rows[0].Role == RoleAssistant {
		rows = rows[1:]
	}
	out := make([]Turn, len(rows))
	for i, r := range rows {
		out[i] = Turn{Role: r.Role, Content: r.Content, CreatedAt: r.CreatedAt}
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
