package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/storage"
)

// The 微信客服 (kf) channel of a self-built app. WeCom's callback only says
// "there is news for account wk…"; the channel pulls the account's messages
// with kf/sync_msg from a cursor kept in the database, stores them (the
// cursor in the same transaction), hands the customers' messages to the
// pipeline and sends the answers with kf/send_msg through the outbox. One
// pull per account runs at a time: in this process a callback arriving
// during a pull asks for one more pull after it, and across instances a
// lease in the database (or Redis) lets one instance pull at a time.

// KFStore is what the kf channel needs of storage.
type KFStore interface {
	StartKFAccount(ctx context.Context, bot, openKfID string) (storage.KFAccount, error)
	StoreKFPage(ctx context.Context, bot, openKfID, cursor string, msgs []storage.Message) ([]storage.Message, error)
	SetKFPull(ctx context.Context, bot, openKfID, failure string) error
	KFAccounts(ctx context.Context, bot string) ([]storage.KFAccount, error)
	SetKFHandedOver(ctx context.Context, bot, user string, on bool) error
	KFHandedOver(ctx context.Context, bot string, users []string, after time.Time) (map[string]bool, error)
	FailDeliveredPart(ctx context.Context, bot, wecomMsgID, reason string) error
	SetKFRefused(ctx context.Context, bot, user string) error
	ClearKFRefused(ctx context.Context, bot string, users []string) error
	KFRefusedSince(ctx context.Context, bot, user string) (time.Time, error)
	DropUnanswered(ctx context.Context, bot, dedupeKey, reason string) (bool, error)
	GetMessage(ctx context.Context, id int64) (storage.Message, error)
}

var _ KFStore = (*storage.DB)(nil)

// kfUserPrefix starts the user id of a kf conversation:
// "kf:<open_kfid>:<external_userid>", one conversation per account and
// customer. WeCom user ids have no ':', so no employee's id looks like it.
const kfUserPrefix = "kf:"

// kfUser is the conversation of customer on account.
func kfUser(account, customer string) string { return kfUserPrefix + account + ":" + customer }

// kfDedupeKey is the stored dedupe key of WeCom's message msgID on account.
func kfDedupeKey(account, msgID string) string { return "kf:" + account + ":" + msgID }

// IsKFUser reports whether a stored conversation is a 微信客服 customer's.
func IsKFUser(user string) bool { return strings.HasPrefix(user, kfUserPrefix) }

// splitKFUser returns the account and customer of a kf conversation.
func splitKFUser(user string) (account, customer string, ok bool) {
	rest, ok := strings.CutPrefix(user, kfUserPrefix)
	if !ok {
		return "", "", false
	}
	account, customer, ok = strings.Cut(rest, ":")
	return account, customer, ok && account != "" && customer != ""
}

// kfLeaseUser is the user id under which the pull lease of an account is
// kept among the user leases; no message is stored under it (see
// connectionUser).
func kfLeaseUser(account string) string { return "#kf:" + account }

// kfHistoryGrace is how long before an account's start a customer message
// may have been sent and still be answered: the message whose callback made
// the first pull of an account is sent just before it. Older messages of
// the first pull are history (up to 3 days of it), stored and not answered.
const kfHistoryGrace = time.Minute

// kfReplyWindow is how long after a customer's message WeCom takes answers
// to it (48 h); later parts fail without a call.
const kfReplyWindow = 48 * time.Hour

// kfPageLimit bounds the pages of one pull, against a server that always
// says has_more.
const kfPageLimit = 1000

// kfCutNote ends a fifth part when an answer needed more than WeCom's five
// messages.
const kfCutNote = "（回答较长，余下内容未发送。）"

// kfBot is the kf channel of one app.
type kfBot struct {
	app    *bot
	cfg    KFConfig
	client *kf.Client
	store  KFStore
	clock  clockwork.Clock
	log    *slog.Logger

	pipeline  *Pipeline
	leases    LeaseStore
	shared    bool
	lease     time.Duration
	owner     string
	exclusive bool

	ctx    context.Context // the pulls' context, until stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pulls   map[string]*kfPull // by open_kfid
	ignored map[string]bool    // accounts not configured, logged once

	names kfNames // the customers' nicknames, for the panel
}

// kfPull is the state of one account's pulls in this process.
type kfPull struct {
	running bool
	again   bool   // news came during the pull: pull once more
	token   string // the newest callback Token
}

func newKFBot(app *bot, cfg KFConfig, client *kf.Client, store KFStore, db LeaseStore, shared ConnectionLeases, clock clockwork.Clock, log *slog.Logger) *kfBot {
	ctx, cancel := context.WithCancel(context.Background())
	k := &kfBot{app: app, cfg: cfg, client: client, store: store, clock: clock, log: log.With("bot", app.cfg.Name, "channel", "kf"),
		leases: db, ctx: ctx, cancel: cancel, pulls: map[string]*kfPull{}, ignored: map[string]bool{},
		names: kfNames{byID: map[string]kfName{}}}
	if shared != nil {
		k.leases, k.shared = sharedLeases{leases: shared, now: clock.Now}, true
	}
	return k
}

// attach takes the pipeline the customers' messages go to and its lease
// settings.
func (k *kfBot) attach(p *Pipeline) {
	k.pipeline, k.lease, k.owner = p, p.cfg.Lease, p.cfg.Owner
	k.exclusive = p.cfg.Exclusive && !k.shared
}

// start records the start of the configured accounts (their history before
// now is not answered) and pulls every account known, for the news that
// came while the service was down.
func (k *kfBot) start(ctx context.Context) error {
	for _, a := range k.cfg.Accounts {
		if _, err := k.store.StartKFAccount(ctx, k.app.cfg.Name, a); err != nil {
			return err
		}
	}
	known, err := k.store.KFAccounts(ctx, k.app.cfg.Name)
	if err != nil {
		return err
	}
	for _, a := range known {
		if k.allowed(a.OpenKfID) {
			k.announce(a.OpenKfID, "")
		}
	}
	return nil
}

// stop ends the pulls and waits for them.
func (k *kfBot) stop() {
	k.cancel()
	k.wg.Wait()
}

func (k *kfBot) allowed(account string) bool {
	return len(k.cfg.Accounts) == 0 || slices.Contains(k.cfg.Accounts, account)
}

// announce takes a kf_msg_or_event callback: news for account, with token
// for sync_msg. It returns at once; the pull runs in the background.
func (k *kfBot) announce(account, token string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.allowed(account) {
		if !k.ignored[account] {
			k.ignored[account] = true
			k.log.Warn("news of a kf account not in kf.accounts; ignored", "open_kfid", account)
		}
		return
	}
	if k.ctx.Err() != nil {
		return // stopping: the next start pulls
	}
	p := k.pulls[account]
	if p == nil {
		p = &kfPull{}
		k.pulls[account] = p
	}
	if token != "" {
		p.token = token
	}
	if p.running {
		p.again = true
		return
	}
	p.running = true
	k.wg.Go(func() { k.pullLoop(account) })
}

// pulling reports whether a pull of any account runs or is asked for.
func (k *kfBot) pulling() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.pulls {
		if p.running {
			return true
		}
	}
	return false
}

// kfPullRetries are the pauses before the pulls that follow a failed one
// with no news in between: news WeCom announced once must not wait for the
// next customer's message because a pull met an outage.
var kfPullRetries = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}

// pullLoop pulls account until no news came during the last pull and it
// succeeded (or its retries are used up).
func (k *kfBot) pullLoop(account string) {
	failures := 0
	for {
		k.mu.Lock()
		p := k.pulls[account]
		p.again = false
		token := p.token
		k.mu.Unlock()

		if k.pullLeased(account, token) {
			failures = 0
		} else if failures < len(kfPullRetries) {
			select {
			case <-k.ctx.Done():
			case <-k.clock.After(kfPullRetries[failures]):
			}
			failures++
			k.mu.Lock()
			p.again = true
			k.mu.Unlock()
		}

		k.mu.Lock()
		if !p.again || k.ctx.Err() != nil {
			p.running = false
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
	}
}

// pullLeased pulls account under its lease. While another instance holds
// it, news may have come after that instance's last page: this one waits
// for the lease and pulls after it. It reports whether the pull succeeded.
func (k *kfBot) pullLeased(account, token string) bool {
	ctx := k.ctx
	if k.exclusive {
		return k.pull(ctx, account, token)
	}
	ref := storage.UserRef{Bot: k.app.cfg.Name, UserID: kfLeaseUser(account)}
	for {
		ok, err := k.leases.ClaimUser(ctx, ref, k.owner, k.clock.Now().Add(k.lease))
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			k.log.Warn("cannot claim the kf pull lease; trying again", "open_kfid", account, "err", err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-k.clock.After(max(k.lease/3, 10*time.Millisecond)):
		}
	}
	ok := k.pull(ctx, account, token)
	if err := k.leases.DropUserLease(context.WithoutCancel(ctx), ref, k.owner); err != nil {
		k.log.Warn("cannot drop the kf pull lease; it expires", "open_kfid", account, "err", err)
	}
	return ok
}

// pull reads account's news page by page until WeCom has no more,
// storing each page with its cursor, and reports whether it got there.
func (k *kfBot) pull(ctx context.Context, account, token string) bool {
	log := k.log.With("open_kfid", account)
	err := k.drain(ctx, log, account, token)
	if ctx.Err() != nil {
		return false
	}
	k.pipeline.metrics.kfPull(k.app.cfg.Name, err)
	failure := ""
	if err != nil {
		failure = Redact(err.Error())
		log.Warn("kf pull failed; pulling again", "err", failure, "hint", kf.Hint(err))
	}
	if err := k.store.SetKFPull(ctx, k.app.cfg.Name, account, failure); err != nil {
		log.Error("cannot record the kf pull", "err", err)
	}
	return err == nil
}

func (k *kfBot) drain(ctx context.Context, log *slog.Logger, account, token string) error {
	acct, err := k.store.StartKFAccount(ctx, k.app.cfg.Name, account)
	if err != nil {
		return err
	}
	cursor := acct.Cursor
	history := acct.StartedAt.Add(-kfHistoryGrace)
	for range kfPageLimit {
		if !k.exclusive {
			// Renew the lease for the next page; lost: another pulls.
			ref := storage.UserRef{Bot: k.app.cfg.Name, UserID: kfLeaseUser(account)}
			if ok, err := k.leases.ClaimUser(ctx, ref, k.owner, k.clock.Now().Add(k.lease)); err != nil || !ok {
				return errors.Join(errors.New("adapter: kf pull lease lost"), err)
			}
		}
		var page kf.SyncMsgResponse
		err := k.app.tokens.Do(ctx, "kf/sync_msg", func(ctx context.Context, at string) error {
			var err error
			page, err = k.client.SyncMsg(ctx, at, kf.SyncMsgRequest{Cursor: cursor, Token: token, OpenKfID: account, Limit: kf.MaxLimit})
			return err
		})
		if kf.MsgTokenExpired(err) && token != "" {
			// The callback's Token is over 10 minutes old: the newest one
			// seen, or none (stricter rate limits).
			token = k.newerToken(account, token)
			continue
		}
		if err != nil {
			return err
		}
		if page.Skipped > 0 {
			log.Warn("kf messages without msgid or msgtype skipped", "count", page.Skipped)
		}
		msgs, byKey := k.messages(account, page.MsgList, history)
		changes, err := k.handOvers(ctx, msgs, byKey)
		if err != nil {
			return err
		}
		claimed := k.claim(ctx, log, msgs)
		added, err := k.store.StoreKFPage(ctx, k.app.cfg.Name, account, page.NextCursor, msgs)
		k.settleClaims(ctx, log, claimed, err == nil)
		if err != nil {
			return err
		}
		cursor = page.Cursor(cursor)
		for user, on := range changes {
			if err := k.store.SetKFHandedOver(ctx, k.app.cfg.Name, user, on); err != nil {
				return err
			}
		}
		var wrote []string
		for _, m := range added {
			if byKey[m.DedupeKey].FromCustomer() && !slices.Contains(wrote, m.UserID) {
				wrote = append(wrote, m.UserID)
			}
		}
		if err := k.store.ClearKFRefused(ctx, k.app.cfg.Name, wrote); err != nil {
			return err
		}
		for _, m := range added {
			k.pipeline.metrics.kfMessage(m.Bot, kfOrigin(byKey[m.DedupeKey].Origin))
			if m.State == storage.MessageReceived {
				k.pipeline.metrics.message(m.Bot, resultReceived)
				k.pipeline.enqueue(userKey{m.Bot, m.UserID})
			}
			switch km := byKey[m.DedupeKey]; km.EventType() {
			case kf.EventEnterSession:
				k.welcome(ctx, log, m, km)
			case kf.EventMsgSendFail:
				k.sendFailed(ctx, log, km)
			case kf.EventUserRecallMsg:
				k.recalled(ctx, log, account, km)
			}
		}
		if !page.More() {
			return nil
		}
	}
	return fmt.Errorf("adapter: kf pull stopped after %d pages", kfPageLimit)
}

// kfClaimKeep is how long a kf message's Redis claim is kept: as long as
// WeCom can return the message (3 days of history).
const kfClaimKeep = 72 * time.Hour

// claim takes the Redis claims of the messages to answer, when instances
// have a database each (UseClaims): each has its own cursor, so the same
// message reaches each of them, and only the first to claim it answers it.
// The others store it as ignored. It returns the keys claimed.
func (k *kfBot) claim(ctx context.Context, log *slog.Logger, msgs []storage.Message) []string {
	claims := k.pipeline.claims
	if claims == nil {
		return nil
	}
	var keys []string
	for i := range msgs {
		m := &msgs[i]
		if m.State != storage.MessageReceived {
			continue
		}
		key := "wecombot:msg:" + k.app.cfg.Name + ":" + m.DedupeKey
		ok, done, err := claims.ClaimMessage(ctx, key, claimPendingTTL)
		switch {
		case err != nil:
			log.Warn("Redis dedupe unavailable; only this instance's database dedupes", "err", err)
		case done || !ok:
			m.State, m.Error = storage.MessageIgnored, "pulled by another instance"
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

// settleClaims keeps the claims of a stored page, or gives them back.
func (k *kfBot) settleClaims(ctx context.Context, log *slog.Logger, keys []string, stored bool) {
	ctx = context.WithoutCancel(ctx)
	for _, key := range keys {
		var err error
		if stored {
			err = k.pipeline.claims.ConfirmMessage(ctx, key, kfClaimKeep)
		} else {
			err = k.pipeline.claims.Unclaim(ctx, key)
		}
		if err != nil {
			log.Warn("cannot settle the Redis dedupe claim; it expires", "err", err)
		}
	}
}

// kfOrigin is the origin label of wecombot_kf_messages_total.
func kfOrigin(origin int) string {
	switch origin {
	case kf.OriginCustomer:
		return "customer"
	case kf.OriginSystem:
		return "event"
	case kf.OriginReceptionist:
		return "receptionist"
	}
	return "other"
}

// newerToken is the newest Token of account if it is not old, else "".
func (k *kfBot) newerToken(account, old string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.pulls[account]; p != nil && p.token != old {
		return p.token
	}
	return ""
}

// messages turns a page into stored messages: the customers' messages
// sent since the account's start are to be answered (received); the rest
// (history, receptionists' messages, events) is stored as ignored.
func (k *kfBot) messages(account string, list []kf.Message, history time.Time) ([]storage.Message, map[string]kf.Message) {
	out := make([]storage.Message, 0, len(list))
	byKey := make(map[string]kf.Message, len(list))
	for _, km := range list {
		acct := km.Account()
		if acct == "" {
			acct = account
		}
		m := storage.Message{
			DedupeKey: kfDedupeKey(acct, km.MsgID), UserID: kfUser(acct, km.Customer()),
			MsgType: km.MsgType, Event: km.EventType(), CreateTime: km.SendTime, State: storage.MessageIgnored,
			Content: string(km.Raw),
		}
		if km.MsgType == kf.TypeText && km.Text != nil {
			m.Content = km.Text.Content
		}
		if km.MsgType == kf.TypeImage && km.Image != nil && km.Image.MediaID != "" {
			m.Media = encodeMedia([]MediaRef{{MediaID: km.Image.MediaID}})
		}
		if km.FromCustomer() && !time.Unix(km.SendTime, 0).Before(history) {
			m.State = storage.MessageReceived
		}
		out = append(out, m)
		byKey[m.DedupeKey] = km
	}
	// A message withdrawn in the same page is not answered; one withdrawn
	// later is dropped if still unanswered (recalled).
	for _, km := range list {
		if km.EventType() != kf.EventUserRecallMsg || km.Event.RecallMsgID == "" {
			continue
		}
		for i := range out {
			if out[i].DedupeKey == kfDedupeKey(account, km.Event.RecallMsgID) && out[i].State == storage.MessageReceived {
				out[i].State, out[i].Error = storage.MessageIgnored, kfRecalled
			}
		}
	}
	return out, byKey
}
