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

// serveUser claims user k and answers its pending messages in order until
// none is left, the lease is lost, or the pipeline stops. On an exclusive
// database no lease is taken: a message accepted meanwhile wakes k again
// (enqueue), so none is missed.
func (p *Pipeline) serveUser(k userKey) {
	u := storage.UserRef{Bot: k.bot, UserID: k.user}
	log := p.log.With("bot", k.bot, "user", k.user)
	ctx := p.workCtx
	leased := !p.cfg.Exclusive
	drop := func() {}
	if leased {
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
		m, found, err := p.store.NextPending(ctx, u)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("cannot read pending messages; the sweeper retries", "err", err)
			}
			drop()
			return
		}
		if !found {
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
			// A message arrived since NextPending, or the lease is gone.
			if ok, err := p.store.ClaimUser(ctx, u, p.cfg.Owner, p.clock.Now().Add(p.cfg.Lease)); err != nil || !ok {
				return
			}
			continue
		}
		if m.ID == last {
			// Answered without leaving the pending state: stop rather
			// than loop; the sweeper tries again later.
			log.Error("message still pending after its answer; retrying later", "message", m.ID)
			drop()
			return
		}
		last = m.ID
		if !p.handle(ctx, m) {
			drop()
			return
		}
	}
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
