package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/storage"
)

// janitorEvery is how often the janitor prunes.
const janitorEvery = time.Hour

// pruner is the part of the storage the janitor uses.
type pruner interface {
	Prune(ctx context.Context, before time.Time) (storage.PruneResult, error)
}

// janitor deletes, once at start and then every janitorEvery, what is older
// than retention (storage.retention): finished messages, their sent parts
// and old conversation turns, so a long-running service does not grow. It
// returns when ctx ends.
func janitor(ctx context.Context, db pruner, retention time.Duration, clock clockwork.Clock, log *slog.Logger) {
	if retention <= 0 {
		return
	}
	t := clock.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		before := clock.Now().Add(-retention)
		start := clock.Now()
		res, err := db.Prune(ctx, before)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("janitor: prune failed; retried next hour", "err", err,
				"messages", res.Messages, "outbox", res.Outbox, "turns", res.Turns, "streams", res.Streams, "media", res.Media)
		case res != storage.PruneResult{}:
			log.Info("janitor: pruned", "before", before.UTC().Format(time.RFC3339),
				"messages", res.Messages, "outbox", res.Outbox, "turns", res.Turns, "streams", res.Streams, "media", res.Media,
				"took", clock.Since(start).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}
