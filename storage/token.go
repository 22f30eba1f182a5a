package storage

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// Token is the persisted state of one bot's WeCom access token, so that a
// restarted service (kill -9 included) reuses a still-valid token instead of
// calling gettoken again.
type Token struct {
	Bot          string
	CorpID       string
	AgentID      int64
	Value        string
	ExpiresAt    time.Time
	FetchedAt    time.Time
	RefreshCount int64
	LastError    string
	UpdatedAt    time.Time
}

type tokenRow struct {
	Bot          string `gorm:"primaryKey;size:64"`
	CorpID       string `gorm:"size:64;not null"`
	AgentID      int64  `gorm:"not null"`
	Value        string `gorm:"column:token;size:1024;not null"`
	ExpiresAt    time.Time
	FetchedAt    time.Time
	RefreshCount int64 `gorm:"not null;default:0"`
	LastError    string
	UpdatedAt    time.Time
}

func (tokenRow) TableName() string { return "tokens" }

// LoadToken returns the stored token of bot, or ErrNotFound.
func (d *DB) LoadToken(ctx context.Context, bot string) (Token, error) {
	var rows []tokenRow
	if err := d.db.WithContext(ctx).Where("bot = ?", bot).Limit(1).Find(&rows).Error; err != nil {
		return Token{}, fmt.Errorf("storage: load token of %s: %w", bot, err)
	}
	if len(rows) == 0 {
		return Token{}, ErrNotFound
	}
	return Token(rows[0]), nil
}

// SaveToken stores a freshly obtained token of t.Bot, clears its last error and
// adds one to its refresh count.
func (d *DB) SaveToken(ctx context.Context, t Token) error {
	row := tokenRow{
		Bot: t.Bot, CorpID: t.CorpID, AgentID: t.AgentID, Value: t.Value,
		ExpiresAt: utc(t.ExpiresAt), FetchedAt: utc(t.FetchedAt), RefreshCount: 1,
		UpdatedAt: d.now(),
	}
	err := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "bot"}},
		DoUpdates: clause.Assignments(map[string]any{
			"corp_id":       row.CorpID,
			"agent_id":      row.AgentID,
			"token":         row.Value,
			"expires_at":    row.ExpiresAt,
			"fetched_at":    row.FetchedAt,
			"refresh_count": clause.Expr{SQL: "tokens.refresh_count + 1"},
			"last_error":    "",
			"updated_at":    row.UpdatedAt,
		}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("storage: save token of %s: %w", t.Bot, err)
	}
	return nil
}

// SaveTokenError records why the last attempt to obtain bot's token failed,
// keeping the token itself: a refresh failure never discards a valid token.
func (d *DB) SaveTokenError(ctx context.Context, bot, corpID string, agentID int64, lastErr string) error {
	row := tokenRow{Bot: bot, CorpID: corpID, AgentID: agentID, LastError: lastErr, UpdatedAt: d.now()}
	err := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "bot"}},
		DoUpdates: clause.Assignments(map[string]any{"last_error": lastErr, "updated_at": row.UpdatedAt}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("storage: save token error of %s: %w", bot, err)
	}
	return nil
}

// ForgetToken clears the stored token value of bot if it is still value (the
// token WeCom just refused), so a restart does not pick it up again.
func (d *DB) ForgetToken(ctx context.Context, bot, value string) error {
	err := d.db.WithContext(ctx).Model(&tokenRow{}).
		Where("bot = ? AND token = ?", bot, value).
		Updates(map[string]any{"token": "", "expires_at": time.Time{}, "updated_at": d.now()}).Error
	if err != nil {
		return fmt.Errorf("storage: forget token of %s: %w", bot, err)
	}
	return nil
}
