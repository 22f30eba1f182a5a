package adapter

// User leases: an instance answers a user's messages only while it holds
// the user's lease in the database (storage.ClaimUser), renewed every third
// of PipelineConfig.Lease, so that one instance at a time answers a user,
// in order. On an exclusive database none is taken.

import (
	"context"
	"log/slog"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// pendingBatch is how many of a user's pending messages one read returns on
// an exclusive database, where nothing but this user's one worker changes
// them: one statement on SQLite's one connection serves several answers.
// Target: answers/s of a burst at least those of a fixed pool of workers
// (BENCHMARKS.md).
const pendingBatch = 16

// serveUser claims user k and answers its pending messages in order until
// none is left, the lease is lost, or the pipeline stops. On an exclusive
// database no lease is taken: a message accepted meanwhile wakes k again
// (enqueue), so none is missed, and the pending messages are read several
// at once.
func (p *Pipeline) serveUser(k userKey) {
	u := storage.UserRef{Bot: k.bot, UserID: k.user}
	log := p.log.With("bot", k.bot, "user", k.user)
	ctx := p.workCtx
	leased := !p.cfg.Exclusive
	drop := func() {}
	limit := pendingBatch
	if leased {
		limit = 1
		claimed, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, p.clock.Now().Add(p.cfg.Lease))
		if err != nil {
			if ctx.Err() == nil {
				log.Error("cannot claim user; the sweeper retries", "err", err)
			}
			return
		}
		if !claimed {
			return // another instance answers this user, this message included
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		renewed := make(chan struct{})
		go p.renew(ctx, cancel, u, log, renewed)
		defer func() { cancel(); <-renewed }()
		drop = func() { p.dropLease(u, log) }
	}

	var last int64
	for {
		p.mu.Lock()
		closed := p.closed
		delete(p.again, k)
		p.mu.Unlock()
		if closed || ctx.Err() != nil {
			drop()
			return
		}
		msgs, err := p.store.PendingMessages(ctx, u, limit)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("cannot read pending messages; the sweeper retries", "err", err)
			}
			drop()
			return
		}
		if len(msgs) == 0 {
			if !leased {
				return
			}
			released, err := p.store.ReleaseUser(ctx, u, p.cfg.Owner)
			if err != nil || released {
				if err != nil {
					drop()
				}
				return
			}
			// A message arrived since PendingMessages, or the lease is gone.
			if ok, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, p.clock.Now().Add(p.cfg.Lease)); err != nil || !ok {
				return
			}
			continue
		}
		if msgs[0].ID <= last {
			// Answered without leaving the pending state: stop rather
			// than loop; the sweeper tries again later.
			log.Error("message still pending after its answer; retrying later", "message", msgs[0].ID)
			drop()
			return
		}
		full := len(msgs) == limit
		// A message cut off while streaming has parts in the outbox, whose
		// delivery may fail it meanwhile: it is answered only as read
		// afresh, first of its batch.
		for i, m := range msgs {
			if i > 0 && m.State == storage.MessageStreaming {
				msgs, full = msgs[:i], true
				break
			}
		}
		for i, m := range msgs {
			if i > 0 && (p.stopped() || ctx.Err() != nil) {
				drop()
				return
			}
			last = m.ID
			p.flood.wait(ctx, p.storing)
			if !p.handle(ctx, m) {
				drop()
				return
			}
		}
		if !leased && !full {
			// Every pending message was in the batch; one accepted since
			// the read woke k again (enqueue), and serve looks again.
			return
		}
	}
}

// stopped reports whether Shutdown began.
func (p *Pipeline) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// renew keeps the lease on u until ctx ends. When the lease is lost (this
// instance stalled past it, and another took over) or cannot be renewed for
// a whole lease, the work on u is cancelled: someone else may be doing it.
func (p *Pipeline) renew(ctx context.Context, cancel context.CancelFunc, u storage.UserRef, log *slog.Logger, done chan struct{}) {
	defer close(done)
	t := p.clock.NewTicker(max(p.cfg.Lease/3, 10*time.Millisecond))
	defer t.Stop()
	lastOK := p.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		now := p.clock.Now()
		ok, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, now.Add(p.cfg.Lease))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && now.Sub(lastOK) < p.cfg.Lease:
			log.Warn("cannot renew the user lease", "err", err)
		case err != nil || !ok:
			log.Warn("user lease lost; stopping work on this user", "err", err)
			cancel()
			return
		default:
			lastOK = now
		}
	}
}

// dropLease gives up the lease on u so that its pending messages are taken
// over at once rather than when the lease expires.
func (p *Pipeline) dropLease(u storage.UserRef, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.workCtx), 5*time.Second)
	defer cancel()
	if err := p.store.DropUserLease(ctx, u, p.cfg.Owner); err != nil {
		log.Warn("cannot drop the user lease; it expires by itself", "err", err)
	}
}
