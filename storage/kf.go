package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// A 微信客服 (kf) account is pulled, not pushed: the service reads its
// messages page by page with a cursor. The cursor and the messages of a
// page are stored in one transaction, so a crash leaves either both or
// neither: a page is never skipped, and one read twice is deduped by the
// messages' unique key. The cursor has no expiry: losing it would replay up
// to 3 days of history.

// KFAccount is what the service keeps of one kf account of a bot.
type KFAccount struct {
	Bot      string
	OpenKfID string
	// Cursor is the next_cursor of the last page stored; "" before the
	// first page. It never goes back to "".
	Cursor string
	// StartedAt is when the service first pulled the account: messages
	// sent before it are history, stored and not answered.
	StartedAt time.Time
	// LastPullAt and LastError are the end and the failure ("" if none) of
	// the last pull.
	LastPullAt time.Time
	LastError  string
}

type kfAccountRow struct {
	ID         int64     `gorm:"primaryKey;autoIncrement"`
	Bot        string    `gorm:"size:64;not null;uniqueIndex:idx_kf_accounts_key,priority:1"`
	OpenKfID   string    `gorm:"column:open_kfid;size:128;not null;uniqueIndex:idx_kf_accounts_key,priority:2"`
	Cursor     string    `gorm:"column:next_cursor;size:128;not null;default:''"`
	StartedAt  time.Time `gorm:"not null"`
	LastPullAt *time.Time
	LastError  string
}

func (kfAccountRow) TableName() string { return "kf_accounts" }

func (r kfAccountRow) account() KFAccount {
	a := KFAccount{Bot: r.Bot, OpenKfID: r.OpenKfID, Cursor: r.Cursor, StartedAt: r.StartedAt, LastError: r.LastError}
	if r.LastPullAt != nil {
		a.LastPullAt = *r.LastPullAt
	}
	return a
}

// StartKFAccount returns the account, stored with StartedAt now if it was
// not yet: the first call for an account fixes when the service started
// answering it, whatever instance makes it.
func (d *DB) StartKFAccount(ctx context.Context, bot, openKfID string) (KFAccount, error) {
	if bot == "" || openKfID == "" {
		return KFAccount{}, errors.New("storage: start kf account: bot and open_kfid are required")
	}
	row := kfAccountRow{Bot: bot, OpenKfID: openKfID, StartedAt: utc(d.now())}
	err := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "bot"}, {Name: "open_kfid"}}, DoNothing: true,
	}).Create(&row).Error
	if err != nil {
		return KFAccount{}, fmt.Errorf("storage: start kf account %s/%s: %w", bot, openKfID, err)
	}
	return d.KFAccount(ctx, bot, openKfID)
}

// KFAccount returns the account, or ErrNotFound.
func (d *DB) KFAccount(ctx context.Context, bot, openKfID string) (KFAccount, error) {
	var rows []kfAccountRow
	if err := d.db.WithContext(ctx).Where("bot = ? AND open_kfid = ?", bot, openKfID).Limit(1).Find(&rows).Error; err != nil {
		return KFAccount{}, fmt.Errorf("storage: get kf account %s/%s: %w", bot, openKfID, err)
	}
	if len(rows) == 0 {
		return KFAccount{}, ErrNotFound
	}
	return rows[0].account(), nil
}

// KFAccounts returns the accounts of bot, by open_kfid.
func (d *DB) KFAccounts(ctx context.Context, bot string) ([]KFAccount, error) {
	var rows []kfAccountRow
	if err := d.db.WithContext(ctx).Where("bot = ?", bot).Order("open_kfid").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("storage: list kf accounts of %s: %w", bot, err)
	}
	out := make([]KFAccount, len(rows))
	for i, r := range rows {
		out[i] = r.account()
	}
	return out, nil
}

// StoreKFPage stores the messages of one page of the account and, unless
// cursor is "", the cursor to read the next page from, in one transaction.
// Messages already stored (same bot and dedupe key) are left as they are.
// It returns the messages that were new, with their ids. The account must
// have been started (StartKFAccount).
func (d *DB) StoreKFPage(ctx context.Context, bot, openKfID, cursor string, msgs []Message) ([]Message, error) {
	now := utc(d.now())
	var added []Message
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		added = added[:0]
		for _, m := range msgs {
			if m.DedupeKey == "" {
				return errors.New("a message without dedupe key")
			}
			if m.State == "" {
				m.State = MessageReceived
			}
			if m.ReceivedAt.IsZero() {
				m.ReceivedAt = now
			}
			var ids []int64
			err := tx.Raw("INSERT INTO messages (bot, dedupe_key, user_id, msg_type, event, content, media, create_time, received_at, state, error, attempts, answered_at) "+
				"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (bot, dedupe_key) DO NOTHING RETURNING id",
				bot, m.DedupeKey, m.UserID, m.MsgType, m.Event, m.Content, m.Media, m.CreateTime, utc(m.ReceivedAt), m.State, m.Error, time.Time{}).
				Scan(&ids).Error
			if err != nil {
				return err
			}
			if len(ids) == 1 {
				m.ID, m.Bot = ids[0], bot
				added = append(added, m)
			}
		}
		if cursor == "" {
			return nil
		}
		res := tx.Exec("UPDATE kf_accounts SET next_cursor = ? WHERE bot = ? AND open_kfid = ?", cursor, bot, openKfID)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: store kf page of %s/%s: %w", bot, openKfID, err)
	}
	return added, nil
}

// SetKFPull records the end of a pull of the account and its failure
// ("" if none).
func (d *DB) SetKFPull(ctx context.Context, bot, openKfID, failure string) error {
	err := d.db.WithContext(ctx).Exec("UPDATE kf_accounts SET last_pull_at = ?, last_error = ? WHERE bot = ? AND open_kfid = ?",
		utc(d.now()), failure, bot, openKfID).Error
	if err != nil {
		return fmt.Errorf("storage: record kf pull of %s/%s: %w", bot, openKfID, err)
	}
	return nil
}

// A kf customer's conversation can be taken by a person (a receptionist);
// the bot leaves it alone until it comes back. kf_customers keeps since
// when a person has it; WeCom ends a conversation after 48 h at the
// latest, so the caller reads it with a horizon.
type kfCustomerRow struct {
	ID         int64  `gorm:"primaryKey;autoIncrement"`
	Bot        string `gorm:"size:64;not null;uniqueIndex:idx_kf_customers_key,priority:1"`
	UserID     string `gorm:"size:255;not null;uniqueIndex:idx_kf_customers_key,priority:2"`
	HumanSince *time.Time
	// RefusedSince is when WeCom said the customer refuses messages
	// (msg_send_fail fail_type 10).
	RefusedSince *time.Time
}

func (kfCustomerRow) TableName() string { return "kf_customers" }

// SetKFHandedOver records that a person has the conversation of user (on),
// or that it came back to the bot (off).
func (d *DB) SetKFHandedOver(ctx context.Context, bot, user string, on bool) error {
	var since *time.Time
	if on {
		t := utc(d.now())
		since = &t
	}
	err := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "bot"}, {Name: "user_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"human_since"}),
	}).Create(&kfCustomerRow{Bot: bot, UserID: user, HumanSince: since}).Error
	if err != nil {
		return fmt.Errorf("storage: set kf hand-over of %s/%s: %w", bot, user, err)
	}
	return nil
}

// SetKFRefused records that the customer user refuses messages, as of now.
func (d *DB) SetKFRefused(ctx context.Context, bot, user string) error {
	t := utc(d.now())
	err := d.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "bot"}, {Name: "user_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"refused_since"}),
	}).Create(&kfCustomerRow{Bot: bot, UserID: user, RefusedSince: &t}).Error
	if err != nil {
		return fmt.Errorf("storage: set kf refusal of %s/%s: %w", bot, user, err)
	}
	return nil
}

// ClearKFRefused forgets the refusals of users: they wrote again.
func (d *DB) ClearKFRefused(ctx context.Context, bot string, users []string) error {
	if len(users) == 0 {
		return nil
	}
	err := d.db.WithContext(ctx).Exec("UPDATE kf_customers SET refused_since = NULL WHERE bot = ? AND user_id IN ? AND refused_since IS NOT NULL",
		bot, users).Error
	if err != nil {
		return fmt.Errorf("storage: clear kf refusals of %s: %w", bot, err)
	}
	return nil
}

// KFRefusedSince returns since when the customer user refuses messages;
// the zero time if they never did.
func (d *DB) KFRefusedSince(ctx context.Context, bot, user string) (time.Time, error) {
	var rows []kfCustomerRow
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id = ? AND refused_since IS NOT NULL", bot, user).Limit(1).Find(&rows).Error
	if err != nil {
		return time.Time{}, fmt.Errorf("storage: read kf refusal of %s/%s: %w", bot, user, err)
	}
	if len(rows) == 0 {
		return time.Time{}, nil
	}
	return *rows[0].RefusedSince, nil
}

// KFHandedOver returns which of users a person has had since after.
func (d *DB) KFHandedOver(ctx context.Context, bot string, users []string, after time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	if len(users) == 0 {
		return out, nil
	}
	var rows []kfCustomerRow
	err := d.db.WithContext(ctx).Where("bot = ? AND user_id IN ? AND human_since > ?", bot, users, utc(after)).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: read kf hand-overs of %s: %w", bot, err)
	}
	for _, r := range rows {
		out[r.UserID] = true
	}
	return out, nil
}

// FailDeliveredPart marks the part of bot that WeCom accepted as
// wecomMsgID, and its message, failed with reason: WeCom reported later
// that it could not deliver it. ErrNotFound: no such part.
func (d *DB) FailDeliveredPart(ctx context.Context, bot, wecomMsgID, reason string) error {
	err := d.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []outboxRow
		if err := tx.Where("bot = ? AND wecom_msg_id = ?", bot, wecomMsgID).Limit(1).Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		p := rows[0]
		if err := tx.Exec("UPDATE outbox SET state = ?, last_error = ? WHERE id = ?", OutboxFailed, reason, p.ID).Error; err != nil {
			return err
		}
		if p.MessageID == 0 {
			return nil
		}
		return tx.Exec("UPDATE messages SET state = ?, error = ? WHERE id = ?", MessageFailed, reason, p.MessageID).Error
	})
	if err != nil {
		return fmt.Errorf("storage: fail delivered part %s/%s: %w", bot, wecomMsgID, err)
	}
	return nil
}

// DropUnanswered marks the message of bot with dedupeKey ignored, with
// reason, if nobody has started answering it; it reports whether it did.
// A customer who withdraws a message before the bot answers it gets no
// answer to it.
func (d *DB) DropUnanswered(ctx context.Context, bot, dedupeKey, reason string) (bool, error) {
	res := d.db.WithContext(ctx).Exec("UPDATE messages SET state = ?, error = ? WHERE bot = ? AND dedupe_key = ? AND state = ?",
		MessageIgnored, reason, bot, dedupeKey, MessageReceived)
	if res.Error != nil {
		return false, fmt.Errorf("storage: drop unanswered message %s/%s: %w", bot, dedupeKey, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// KFMessagesSince counts, by open_kfid, the messages of bot's kf
// conversations (user "kf:<open_kfid>:<external_userid>") sent since since:
// the customers' and the receptionists' messages, not the events (a
// customer opening the chat, a recall…). The send time decides, not the
// time stored: the up to 3 days of history of an account's first pull are
// not today's traffic.
func (d *DB) KFMessagesSince(ctx context.Context, bot string, since time.Time) (map[string]int64, error) {
	var rows []struct {
		UserID string
		N      int64
	}
	// received_at bounds the rows read by its index; no message is stored
	// before it is sent.
	err := d.db.WithContext(ctx).Model(&messageRow{}).Select("user_id, COUNT(*) AS n").
		Where("bot = ? AND user_id LIKE ? AND msg_type <> ? AND received_at >= ? AND create_time >= ?",
			bot, kfUserPrefix+"%", "event", utc(since), since.Unix()).
		Group("user_id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("storage: count kf messages of %s: %w", bot, err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		// SQLite's LIKE ignores case: the prefix is checked here too.
		rest, ok := strings.CutPrefix(r.UserID, kfUserPrefix)
		account, _, found := strings.Cut(rest, ":")
		if ok && found && account != "" {
			out[account] += r.N
		}
	}
	return out, nil
}

// kfUserPrefix starts the user id of a kf conversation (adapter.kfUser).
const kfUserPrefix = "kf:"
