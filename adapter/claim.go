package adapter

import (
	"context"
	"errors"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// MessageClaims dedupes inbound messages across instances that do not share
// a database (storage.Redis).
type MessageClaims interface {
	ClaimMessage(ctx context.Context, key string, pendingTTL time.Duration) (claimed, done bool, err error)
	ConfirmMessage(ctx context.Context, key string, keep time.Duration) error
	Unclaim(ctx context.Context, key string) error
}

// ErrInFlight is Accept's answer to a retry of a message another instance
// is storing right now: the callback answers 500 and WeCom retries later.
var ErrInFlight = errors.New("adapter: another instance is storing this message; WeCom will retry it")

// How long a message claim waits for its instance to store the message
// (longer than a callback may take), and how long a stored message's claim
// is kept (WeCom's retries come within seconds).
const (
	claimPendingTTL = 10 * time.Second
	claimKeep       = 24 * time.Hour
)

// UseClaims makes Accept claim every message in c before storing it: the
// dedupe across instances with a database each.
func (p *Pipeline) UseClaims(c MessageClaims) { p.claims = c }

// acceptClaimed stores m once it holds m's claim in Redis: a message that
// another instance stored, or is storing, is not stored again. With Redis
// unavailable, the database's unique key dedupes alone.
func (p *Pipeline) acceptClaimed(ctx context.Context, m *storage.Message) (bool, error) {
	key := "wecombot:msg:" + m.Bot + ":" + m.DedupeKey
	claimed, done, err := p.claims.ClaimMessage(ctx, key, claimPendingTTL)
	switch {
	case err != nil:
		p.log.Warn("Redis dedupe unavailable; only this instance's database dedupes", "err", err)
		return p.insert(ctx, m)
	case done:
		return false, nil
	case !claimed:
		return false, ErrInFlight
	}
	isNew, err := p.insert(ctx, m)
	// Stored (or known): later retries are duplicates. Not stored: the
	// claim is given back so that WeCom's retry is not dropped.
	if err == nil {
		if err2 := p.claims.ConfirmMessage(ctx, key, claimKeep); err2 != nil {
			p.log.Warn("cannot confirm the Redis dedupe claim; it expires", "err", err2)
		}
	} else if err2 := p.claims.Unclaim(context.WithoutCancel(ctx), key); err2 != nil {
		p.log.Warn("cannot release the Redis dedupe claim; it expires", "err", err2)
	}
	return isNew, err
}
