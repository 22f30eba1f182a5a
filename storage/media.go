package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// MaxMediaBytes bounds the bytes of one stored image: the pipeline refuses
// larger files before they get here.
const MaxMediaBytes = 10 << 20

// MessageMedia is one image of a message, downloaded after the message was
// stored: its bytes and sniffed type, or the reason it could not be used
// (Reason set, no bytes). Seq numbers the images of a message from 0.
type MessageMedia struct {
	MessageID int64
	Seq       int
	MIME      string
	Size      int64 // the bytes' length; for a refused file, as far as known
	Data      []byte
	Reason    string // why the image cannot be used; "": it can
	CreatedAt time.Time
}

type messageMediaRow struct {
	ID        int64  `gorm:"primaryKey;autoIncrement"`
	MessageID int64  `gorm:"not null;uniqueIndex:idx_message_media_seq,priority:1"`
	Seq       int    `gorm:"not null;uniqueIndex:idx_message_media_seq,priority:2"`
	MIME      string `gorm:"column:mime;size:64"`
	Size      int64
	Data      []byte
	Reason    string
	CreatedAt time.Time
}

func (messageMediaRow) TableName() string { return "message_media" }

// mediaNoData are the columns of message_media but the bytes.
var mediaNoData = []string{"id", "message_id", "seq", "mime", "size", "reason", "created_at"}

func (r messageMediaRow) media() MessageMedia {
	return MessageMedia{MessageID: r.MessageID, Seq: r.Seq, MIME: r.MIME, Size: r.Size, Data: r.Data,
		Reason: r.Reason, CreatedAt: r.CreatedAt}
}

// SaveMedia stores an image of a message. An image already stored under
// the same message and seq is kept as it is (a download repeated after a
// restart stores nothing new).
func (d *DB) SaveMedia(ctx context.Context, m MessageMedia) error {
	if m.MessageID == 0 {
		return errors.New("storage: save media: message id is required")
	}
	if len(m.Data) > MaxMediaBytes {
		return fmt.Errorf("storage: save media of message %d: %d bytes, more than %d", m.MessageID, len(m.Data), MaxMediaBytes)
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = d.now()
	}
	row := messageMediaRow{MessageID: m.MessageID, Seq: m.Seq, MIME: m.MIME, Size: m.Size, Data: m.Data,
		Reason: m.Reason, CreatedAt: utc(m.CreatedAt)}
	if err := d.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
		return fmt.Errorf("storage: save media of message %d: %w", m.MessageID, err)
	}
	return nil
}

// MessageMedia returns the images stored for message id, by seq; withData
// false leaves their bytes out (the panel's list).
func (d *DB) MessageMedia(ctx context.Context, id int64, withData bool) ([]MessageMedia, error) {
	q := d.db.WithContext(ctx).Where("message_id = ?", id).Order("seq")
	if !withData {
		q = q.Select(mediaNoData)
	}
	var rows []messageMediaRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: media of message %d: %w", id, err)
	}
	out := make([]MessageMedia, len(rows))
	for i, r := range rows {
		out[i] = r.media()
	}
	return out, nil
}

// MediaOf returns the images stored for each of ids, without their bytes,
// by message id and seq.
func (d *DB) MediaOf(ctx context.Context, ids []int64) (map[int64][]MessageMedia, error) {
	out := map[int64][]MessageMedia{}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []messageMediaRow
	err := d.db.WithContext(ctx).Select(mediaNoData).
		Where("message_id IN ?", ids).Order("message_id, seq").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: media of messages: %w", err)
	}
	for _, r := range rows {
		out[r.MessageID] = append(out[r.MessageID], r.media())
	}
	return out, nil
}
