package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// An AI bot answers a message with a stream that WeCom polls for: each poll
// (which can reach any instance behind the load balancer) gets the whole
// text so far. The stream's state therefore lives here, shared by every
// instance, not in process memory.

// ResponseURLLifetime is how long after the message callback its
// response_url can still be used (WeCom: once, within 1 h).
const ResponseURLLifetime = time.Hour

var (
	// ErrStreamFinished is returned when a finished stream would change:
	// the final text was already shown, and refreshes must keep seeing it.
	ErrStreamFinished = errors.New("storage: stream is finished")
	// ErrStreamNotCumulative is returned when new content does not extend
	// the stored content: every refresh replaces the shown text, so the
	// text may only grow.
	ErrStreamNotCumulative = errors.New("storage: stream content must extend the stored content")
)

// AIBotStream is the state of one answer stream of an AI bot.
type AIBotStream struct {
	Bot       string
	StreamID  string
	MessageID int64 // the stored message it answers
	// Content is the cumulative text so far; the caller keeps it within
	// WeCom's stream limit.
	Content        string
	Finished       bool
	FeedbackID     string
	Feedback       AIBotFeedback // the user's verdict; zero: none
	ResponseURL    string        // single use, from the message callback
	ResponseUsedAt time.Time     // when response_url was claimed; zero: not yet
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

type aibotStreamRow struct {
	ID             int64  `gorm:"primaryKey;autoIncrement"`
	Bot            string `gorm:"size:64;not null;uniqueIndex:idx_aibot_streams_key,priority:1"`
	StreamID       string `gorm:"size:128;not null;uniqueIndex:idx_aibot_streams_key,priority:2"`
	MessageID      int64  `gorm:"not null;index"`
	Content        string `gorm:"not null;default:''"`
	Finished       bool   `gorm:"not null;default:false"`
	FeedbackID     string `gorm:"size:256;index"`
	FeedbackType   int    `gorm:"not null;default:0"`
	FeedbackNote   string
	FeedbackAt     *time.Time
	ResponseURL    string `gorm:"size:1024"`
	ResponseUsedAt *time.Time
	CreatedAt      time.Time `gorm:"not null;index"`
	UpdatedAt      time.Time `gorm:"not null"`
}

func (aibotStreamRow) TableName() string { return "aibot_streams" }

func (r aibotStreamRow) stream() AIBotStream {
	s := AIBotStream{
		Bot: r.Bot, StreamID: r.StreamID, MessageID: r.MessageID, Content: r.Content, Finished: r.Finished,
		FeedbackID: r.FeedbackID, ResponseURL: r.ResponseURL, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
	if r.ResponseUsedAt != nil {
		s.ResponseUsedAt = *r.ResponseUsedAt
	}
	if r.FeedbackAt != nil {
		s.Feedback = AIBotFeedback{Type: r.FeedbackType, Note: r.FeedbackNote, At: *r.FeedbackAt}
	}
	return s
}

// CreateAIBotStream stores s (Bot, StreamID, MessageID, FeedbackID,
// ResponseURL, Content and CreatedAt, default now, are taken) unless a stream with the same bot and
// stream id exists, and returns the stored stream and whether it is new. A
// repeated callback, on this instance or another, gets the first one's row:
// the unique key decides between concurrent creates.
func (d *DB) CreateAIBotStream(ctx context.Context, s AIBotStream) (AIBotStream, bool, error) {
	if s.Bot == "" || s.StreamID == "" {
		return AIBotStream{}, false, errors.New("storage: create stream: bot and stream id are required")
	}
	now := d.now()
	created := now
	if !s.CreatedAt.IsZero() {
		// The channel's clock: the poll window and the response_url's hour
		// count from it.
		created = utc(s.CreatedAt)
	}
	row := aibotStreamRow{
		Bot: s.Bot, StreamID: s.StreamID, MessageID: s.MessageID, Content: s.Content,
		FeedbackID: s.FeedbackID, ResponseURL: s.ResponseURL, CreatedAt: created, UpdatedAt: now,
	}
	res := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "bot"}, {Name: "stream_id"}},
		DoNothing: true,
	}).Create(&row)
	if res.Error != nil {
		return AIBotStream{}, false, fmt.Errorf("storage: create stream %s/%s: %w", s.Bot, s.StreamID, res.Error)
	}
	isNew := res.RowsAffected == 1
	if !isNew && (s.MessageID != 0 || s.ResponseURL != "") {
		// A repeat keeps the first one's row but fills in what the first
		// did not know: the message (a callback creates its stream before
		// storing the message) and the response_url (a worker may create
		// the stream of a message whose callback comes later).
		err := d.db.WithContext(ctx).Model(&aibotStreamRow{}).Where("bot = ? AND stream_id = ?", s.Bot, s.StreamID).
			Updates(map[string]any{
				"message_id":   gorm.Expr("CASE WHEN message_id = 0 THEN ? ELSE message_id END", s.MessageID),
				"response_url": gorm.Expr("CASE WHEN response_url = '' THEN ? ELSE response_url END", s.ResponseURL),
			}).Error
		if err != nil {
			return AIBotStream{}, false, fmt.Errorf("storage: create stream %s/%s: %w", s.Bot, s.StreamID, err)
		}
	}
	got, err := d.GetAIBotStream(ctx, s.Bot, s.StreamID)
	if err != nil {
		return AIBotStream{}, false, fmt.Errorf("storage: create stream %s/%s: %w", s.Bot, s.StreamID, err)
	}
	return got, isNew, nil
}

// GetAIBotStream returns the stream of bot with streamID, or ErrNotFound.
func (d *DB) GetAIBotStream(ctx context.Context, bot, streamID string) (AIBotStream, error) {
	var rows []aibotStreamRow
	if err := d.db.WithContext(ctx).Where("bot = ? AND stream_id = ?", bot, streamID).Limit(1).Find(&rows).Error; err != nil {
		return AIBotStream{}, fmt.Errorf("storage: get stream %s/%s: %w", bot, streamID, err)
	}
	if len(rows) == 0 {
		return AIBotStream{}, ErrNotFound
	}
	return rows[0].stream(), nil
}

// UpdateAIBotStream replaces the content of a stream that is not finished
// with content, which must extend the stored content, or it gives
// ErrStreamNotCumulative; a finished stream gives ErrStreamFinished, an
// unknown one ErrNotFound.
func (d *DB) UpdateAIBotStream(ctx context.Context, bot, streamID, content string) error {
	if err := d.setAIBotStream(ctx, bot, streamID, content, false); err != nil {
		return fmt.Errorf("storage: update stream %s/%s: %w", bot, streamID, err)
	}
	return nil
}

// FinishAIBotStream sets the final content of a stream and finishes it, in
// one statement, under the rules of UpdateAIBotStream. A finished stream is
// final: finishing it again gives ErrStreamFinished.
func (d *DB) FinishAIBotStream(ctx context.Context, bot, streamID, content string) error {
	if err := d.setAIBotStream(ctx, bot, streamID, content, true); err != nil {
		return fmt.Errorf("storage: finish stream %s/%s: %w", bot, streamID, err)
	}
	return nil
}

func (d *DB) setAIBotStream(ctx context.Context, bot, streamID, content string, finish bool) error {
	// The prefix test runs in the statement, so two instances writing one
	// stream can never make it shrink between a read and a write.
	res := d.db.WithContext(ctx).Model(&aibotStreamRow{}).
		Where("bot = ? AND stream_id = ? AND finished = ?", bot, streamID, false).
		Where("substr(CAST(? AS TEXT), 1, length(content)) = content", content).
		Updates(map[string]any{"content": content, "finished": finish, "updated_at": d.now()})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 1 {
		return nil
	}
	s, err := d.GetAIBotStream(ctx, bot, streamID)
	switch {
	case err != nil:
		return err
	case s.Finished:
		return ErrStreamFinished
	default:
		return ErrStreamNotCumulative
	}
}

// ClaimResponseURL marks the response_url of a stream used at now, and
// reports whether this caller won it: the first claim does, later claims,
// claims of a stream without one and claims more than ResponseURLLifetime
// after the stream was created get false. An unknown stream gives
// ErrNotFound. The claim comes before the one POST, so a crash between them
// loses that delivery rather than sending it twice.
func (d *DB) ClaimResponseURL(ctx context.Context, bot, streamID string, now time.Time) (bool, error) {
	now = utc(now)
	res := d.db.WithContext(ctx).Model(&aibotStreamRow{}).
		Where("bot = ? AND stream_id = ? AND response_url <> '' AND response_used_at IS NULL AND created_at >= ?",
			bot, streamID, now.Add(-ResponseURLLifetime)).
		Updates(map[string]any{"response_used_at": now, "updated_at": d.now()})
	if res.Error != nil {
		return false, fmt.Errorf("storage: claim response url of stream %s/%s: %w", bot, streamID, res.Error)
	}
	if res.RowsAffected == 1 {
		return true, nil
	}
	if _, err := d.GetAIBotStream(ctx, bot, streamID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return false, err
		}
		return false, fmt.Errorf("storage: claim response url of stream %s/%s: %w", bot, streamID, err)
	}
	return false, nil
}

// AIBotFeedback is a user's verdict on an answer (the buttons under it).
type AIBotFeedback struct {
	Type int    // WeCom's: 1 accurate, 2 inaccurate, 3 cancelled
	Note string // the reasons and the user's words, as the channel words them
	At   time.Time
}

// SetAIBotFeedback stores f on the stream of bot whose feedback id is
// feedbackID (a later verdict replaces an earlier one) and returns the
// stream; ErrNotFound when no stream has that feedback id.
func (d *DB) SetAIBotFeedback(ctx context.Context, bot, feedbackID string, f AIBotFeedback) (AIBotStream, error) {
	res := d.db.WithContext(ctx).Model(&aibotStreamRow{}).Where("bot = ? AND feedback_id = ?", bot, feedbackID).
		Updates(map[string]any{"feedback_type": f.Type, "feedback_note": f.Note, "feedback_at": utc(f.At)})
	if res.Error != nil {
		return AIBotStream{}, fmt.Errorf("storage: set feedback %s/%s: %w", bot, feedbackID, res.Error)
	}
	if res.RowsAffected == 0 {
		return AIBotStream{}, ErrNotFound
	}
	var rows []aibotStreamRow
	if err := d.db.WithContext(ctx).Where("bot = ? AND feedback_id = ?", bot, feedbackID).Limit(1).Find(&rows).Error; err != nil {
		return AIBotStream{}, fmt.Errorf("storage: set feedback %s/%s: %w", bot, feedbackID, err)
	}
	return rows[0].stream(), nil
}

// AIBotStreamsOf returns the streams answering the messages ids, by
// message id (for the panel).
func (d *DB) AIBotStreamsOf(ctx context.Context, ids []int64) (map[int64]AIBotStream, error) {
	out := map[int64]AIBotStream{}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []aibotStreamRow
	if err := d.db.WithContext(ctx).Where("message_id IN ?", ids).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: streams of messages: %w", err)
	}
	for _, r := range rows {
		out[r.MessageID] = r.stream()
	}
	return out, nil
}
