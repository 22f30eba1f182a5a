package adapter

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/wecombot/wecombot/storage"
)

// OutboxStore is what the sender needs of storage.
type OutboxStore interface {
	DueParts(ctx context.Context, now time.Time, limit int) ([]storage.OutboxPart, error)
	NextDue(ctx context.Context) (time.Time, bool, error)
	MarkSent(ctx context.Context, id int64, wecomMsgID string) error
	Reschedule(ctx context.Context, id int64, next time.Time, reason string, attempt bool) error
	FailPart(ctx context.Context, id int64, reason string) error
	ClaimPart(ctx context.Context, id int64, attemptsSeen int, retryAt time.Time) (bool, error)
}

// partSender delivers one part through its bot's channel (Replier.Deliver).
type partSender func(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error)

// OutboxConfig configures delivery.
type OutboxConfig struct {
	// GiveUpAfter is how long a part is retried before its message is
	// marked failed (default 24h).
	GiveUpAfter time.Duration
	// Concurrency is how many users' parts are sent at once.
	Concurrency int
	// Poll bounds the wait for the next due part (default 1m). Other
	// instances on the same database cannot wake this one, so with a shared
	// database it is short: parts a dead instance left are sent by the
	// others within it.
	Poll time.Duration
}

// Outbox delivers stored reply parts: per user in order, kept under WeCom's
// per-user limits (beyond them WeCom drops messages silently), retrying
// transient failures with exponential backoff and jitter.
type Outbox struct {
	cfg   OutboxConfig
	store OutboxStore
	send  partSender
	clock clockwork.Clock
	log   *slog.Logger
	wake  chan struct{}

	mu         sync.Mutex
	sendLimits map[userKey]*userSendLimit
	pruned     time.Time // last pruneSendLimits walk; Run's goroutine only
}

// The per-user limits that keep any minute under WeCom's 30 messages and any
// hour under its 1000: a bucket of b tokens refilled at r stays under N per
// window W when b + r·W ≤ N.
const (
	minuteBurst = 10
	hourBurst   = 100
)

var (
	minuteRate = rate.Every(3 * time.Second)             // 10 + 20/min ≤ 30
	hourRate   = rate.Limit(900.0 / time.Hour.Seconds()) // 100 + 900/h ≤ 1000
)

// userSendLimit keeps one user's sends under WeCom's per-user limits: a
// minute's bucket and an hour's.
type userSendLimit struct {
	minute, hour *rate.Limiter
	lastUsed     time.Time
}

// NewOutbox returns a sender; Run delivers.
func NewOutbox(cfg OutboxConfig, store OutboxStore, send partSender, clock clockwork.Clock, log *slog.Logger) *Outbox {
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = 24 * time.Hour
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Minute
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Outbox{cfg: cfg, store: store, send: send, clock: clock, log: log,
		wake: make(chan struct{}, 1), sendLimits: map[userKey]*userSendLimit{}}
}

// Notify tells the sender that new parts are waiting.
func (o *Outbox) Notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends. A send in progress finishes first.
func (o *Outbox) Run(ctx context.Context) {
	for ctx.Err() == nil {
		parts, err := o.store.DueParts(ctx, o.clock.Now(), 64)
		if err != nil {
			o.log.Error("cannot read outbox", "err", err)
			o.sleep(ctx, time.Second)
			continue
		}
		if len(parts) == 0 {
			o.idle(ctx)
			continue
		}
		o.deliverAll(ctx, parts)
		o.pruneSendLimits()
	}
}

// flush delivers the parts due now until none is left or ctx ends (at
// shutdown, with Run stopped).
func (o *Outbox) flush(ctx context.Context) {
	for ctx.Err() == nil {
		parts, err := o.store.DueParts(ctx, o.clock.Now(), 64)
		if err != nil || len(parts) == 0 {
			return
		}
		o.deliverAll(ctx, parts)
	}
}

// idle waits for the next due part, a notification or the end.
func (o *Outbox) idle(ctx context.Context) {
	wait := o.cfg.Poll
	if next, ok, err := o.store.NextDue(ctx); err == nil && ok {
		wait = min(max(next.Sub(o.clock.Now()), 0), wait)
	}
	o.sleep(ctx, wait)
}

func (o *Outbox) sleep(ctx context.Context, d time.Duration) {
	t := o.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-o.wake:
	case <-t.Chan():
	}
}

// deliverAll sends the due parts, each the head of its user's queue, with
// bounded concurrency. Sends are not cancelled by ctx mid-flight: a send
// whose outcome is unknown is what makes duplicates.
func (o *Outbox) deliverAll(ctx context.Context, parts []storage.OutboxPart) {
	sem := make(chan struct{}, o.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, p := range parts {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			o.deliver(context.WithoutCancel(ctx), p)
		}()
	}
	wg.Wait()
}

func (o *Outbox) deliver(ctx context.Context, p storage.OutboxPart) {
	now := o.clock.Now()
	log := o.log.With("bot", p.Bot, "user", p.UserID, "part", p.ID)
	if now.Sub(p.CreatedAt) > o.cfg.GiveUpAfter {
		reason := fmt.Sprintf("not delivered within %s: %s", o.cfg.GiveUpAfter, p.LastError)
		log.Warn("giving up on reply part", "reason", reason)
		o.must(log, o.store.FailPart(ctx, p.ID, reason))
		return
	}
	if wait := o.reserveSend(userKey{p.Bot, p.UserID}, now); wait > 0 {
		o.must(log, o.store.Reschedule(ctx, p.ID, now.Add(wait), "paced: WeCom allows 30 messages a minute per user", false))
		return
	}
	// Record the attempt before making it: after a crash in the middle, the
	// resend asks WeCom to drop a copy of what may have been delivered.
	dupCheck := time.Duration(0)
	if p.Attempts > 0 {
		dupCheck = min(now.Sub(p.CreatedAt)+time.Minute, 4*time.Hour)
	}
	claimed, err := o.store.ClaimPart(ctx, p.ID, p.Attempts, now.Add(retryDelay(p.Attempts)))
	if err != nil {
		log.Error("cannot record send attempt", "err", err)
		return
	}
	if !claimed {
		return // another sender on this database has it
	}
	msgID, err := o.send(ctx, p, dupCheck)
	switch {
	case err == nil:
		o.must(log, o.store.MarkSent(ctx, p.ID, msgID))
	case permanentSendError(err):
		log.Warn("reply part cannot be delivered", "err", err)
		o.must(log, o.store.FailPart(ctx, p.ID, Redact(err.Error())))
	default:
		next := now.Add(retryDelay(p.Attempts + 1))
		log.Warn("reply part not delivered; retrying", "err", Redact(err.Error()), "hint", Hint(err), "next", next.UTC())
		o.must(log, o.store.Reschedule(ctx, p.ID, next, Redact(err.Error()), false))
	}
}

func (o *Outbox) must(log *slog.Logger, err error) {
	if err != nil {
		log.Error("outbox update failed", "err", err)
	}
}

// retryDelay is the pause before the attempt after the given number of
// attempts: sendRetryBackOff's interval at that position, computed from the
// stored count since the state lives in the row.
func retryDelay(attempts int) time.Duration {
	return nthBackOff(sendRetryBackOff(), attempts)
}

// reserveSend reserves a send for user k at now within the user's limits,
// or says how long to wait.
func (o *Outbox) reserveSend(k userKey, now time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.sendLimits[k]
	if l == nil {
		l = &userSendLimit{minute: rate.NewLimiter(minuteRate, minuteBurst), hour: rate.NewLimiter(hourRate, hourBurst)}
		o.sendLimits[k] = l
	}
	l.lastUsed = now
	rm := l.minute.ReserveN(now, 1)
	rh := l.hour.ReserveN(now, 1)
	wait := max(rm.DelayFrom(now), rh.DelayFrom(now))
	if wait > 0 {
		rm.CancelAt(now)
		rh.CancelAt(now)
	}
	return wait
}

// How long a user's send limit is kept unused, and how often the limits
// are walked to forget such users.
const (
	sendLimitIdle  = time.Hour
	sendLimitPrune = 10 * time.Minute
)

// pruneSendLimits forgets users idle for over sendLimitIdle: their buckets
// are full again, so a new limit is the same as the old one. Run calls it
// after every batch; it walks the map only every sendLimitPrune, not once
// per batch.
func (o *Outbox) pruneSendLimits() {
	now := o.clock.Now()
	if now.Sub(o.pruned) < sendLimitPrune {
		return
	}
	o.pruned = now
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, l := range o.sendLimits {
		if now.Sub(l.lastUsed) > sendLimitIdle {
			delete(o.sendLimits, k)
		}
	}
}
