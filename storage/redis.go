package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedToken is a token as instances share it in Redis.
type SharedToken struct {
	Value     string
	ExpiresAt time.Time
	FetchedAt time.Time
	// RefreshAfter, when set, is the earliest time to ask WeCom again: a
	// refetch returned this same token, so asking before then is pointless.
	RefreshAfter time.Time
}

// Redis shares tokens and leases between instances. go-redis reconnects by
// itself; callers treat any error as "Redis unavailable" and fall back.
type Redis struct {
	c *redis.Client
}

// OpenRedis connects to addr (host:port). It does not fail when Redis is down
// at start: the service must run without it and pick it up later.
func OpenRedis(addr string) *Redis {
	return &Redis{c: redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  time.Second,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		MaxRetries:   1,
	})}
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("storage: redis ping: %w", err)
	}
	return nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.c.Close() }

// LoadShared returns the shared token under key, or ErrNotFound.
func (r *Redis) LoadShared(ctx context.Context, key string) (SharedToken, error) {
	h, err := r.c.HGetAll(ctx, key).Result()
	if err != nil {
		return SharedToken{}, fmt.Errorf("storage: redis load %s: %w", key, err)
	}
	if h["value"] == "" {
		return SharedToken{}, ErrNotFound
	}
	t := SharedToken{Value: h["value"]}
	t.ExpiresAt = unixMilli(h["expires_at"])
	t.FetchedAt = unixMilli(h["fetched_at"])
	t.RefreshAfter = unixMilli(h["refresh_after"])
	return t, nil
}

func unixMilli(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// StoreShared publishes t under key until it expires.
func (r *Redis) StoreShared(ctx context.Context, key string, t SharedToken) error {
	if !t.ExpiresAt.After(time.Now()) {
		return nil // already dead: nothing worth sharing
	}
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		p.HSet(ctx, key,
			"value", t.Value,
			"expires_at", millis(t.ExpiresAt),
			"fetched_at", millis(t.FetchedAt),
			"refresh_after", millis(t.RefreshAfter))
		p.PExpireAt(ctx, key, t.ExpiresAt)
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: redis store %s: %w", key, err)
	}
	return nil
}

// dropIfValue deletes a hash only when it still holds the refused token, so
// that of several instances refused at once only the first forces a refetch.
var dropIfValue = redis.NewScript(`
if redis.call("HGET", KEYS[1], "value") == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// DropShared removes the shared token under key if it is still value.
func (r *Redis) DropShared(ctx context.Context, key, value string) (bool, error) {
	n, err := dropIfValue.Run(ctx, r.c, []string{key}, value).Int()
	if err != nil {
		return false, fmt.Errorf("storage: redis drop %s: %w", key, err)
	}
	return n == 1, nil
}

// releaseIfOwner deletes a lease only for its holder: a holder whose lease
// expired must not release the next holder's.
var releaseIfOwner = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Lease takes the lock "key:lease" for ttl (SET NX PX with a unique value).
// ok is false when another holder has it. release gives it back.
func (r *Redis) Lease(ctx context.Context, key string, ttl time.Duration) (func(), bool, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	owner := hex.EncodeToString(b[:])
	lk := key + ":lease"
	ok, err := r.c.SetNX(ctx, lk, owner, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("storage: redis lease %s: %w", lk, err)
	}
	if !ok {
		return nil, false, nil
	}
	release := func() {
		// Released with a fresh ctx: the caller's may be done already.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = releaseIfOwner.Run(ctx, r.c, []string{lk}, owner).Err()
	}
	return release, true, nil
}

// Unclaim releases a claim (DEL), for a caller whose own write failed after
// ClaimMessage: otherwise the sender's retry would be dropped as a duplicate and
// the work lost. Releasing a key that is not claimed is not an error.
func (r *Redis) Unclaim(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("storage: redis unclaim %s: %w", key, err)
	}
	return nil
}

// Message claim values: a claim is pending while its instance stores the
// message, done once the message is stored.
const (
	claimPending = "pending"
	claimDone    = "done"
)

// ClaimMessage claims an inbound message's key for the instance about to
// store it (SET NX, value pending, for pendingTTL). When it is claimed
// already, done tells whether the message is stored (a retry to drop) or
// still being stored by another instance, which may yet die before it
// commits: the caller refuses the retry, WeCom retries again later, and by
// then the claim is done or has expired. An error means Redis did not answer.
func (r *Redis) ClaimMessage(ctx context.Context, key string, pendingTTL time.Duration) (claimed, done bool, err error) {
	for range 2 {
		ok, err := r.c.SetNX(ctx, key, claimPending, pendingTTL).Result()
		if err != nil {
			return false, false, fmt.Errorf("storage: redis claim %s: %w", key, err)
		}
		if ok {
			return true, false, nil
		}
		v, err := r.c.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			continue // expired between the two calls: claim again
		}
		if err != nil {
			return false, false, fmt.Errorf("storage: redis claim %s: %w", key, err)
		}
		return false, v != claimPending, nil
	}
	return false, false, nil
}

// ConfirmMessage marks a claimed message stored, for keep (WeCom's retries
// come within seconds; a day is plenty).
func (r *Redis) ConfirmMessage(ctx context.Context, key string, keep time.Duration) error {
	if err := r.c.Set(ctx, key, claimDone, keep).Err(); err != nil {
		return fmt.Errorf("storage: redis confirm %s: %w", key, err)
	}
	return nil
}

// A held lease in Redis is "owner|until in unix ms": the holder and when its
// lease ends on the caller's clock, so that instances decide expiry the way
// DB.ClaimUser does, by the clock they pass (a test's fake one included).
// The key itself expires a minute after until, so a dead holder leaves
// nothing behind for long.
var claimLease = redis.NewScript(`
local holder, untilMs = string.match(redis.call("GET", KEYS[1]) or "", "^(.*)|(%d+)$")
if holder and holder ~= ARGV[1] and tonumber(untilMs) >= tonumber(ARGV[3]) then
  return 0
end
redis.call("SET", KEYS[1], ARGV[1] .. "|" .. ARGV[2], "PX", ARGV[4])
return 1`)

var dropLease = redis.NewScript(`
local holder = string.match(redis.call("GET", KEYS[1]) or "", "^(.*)|%d+$")
if holder == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// leaseKeep is how long a lease's key outlives its end.
const leaseKeep = time.Minute

// ClaimLease takes or renews the lease key for owner until until: it
// succeeds when nobody holds it, when owner does, or when the holder's
// lease ended before now. The same rules as DB.ClaimUser, for instances
// that have a database each (SQLite) and share Redis.
func (r *Redis) ClaimLease(ctx context.Context, key, owner string, now, until time.Time) (bool, error) {
	ttl := until.Sub(now) + leaseKeep
	n, err := claimLease.Run(ctx, r.c, []string{key}, owner, until.UnixMilli(), now.UnixMilli(), ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("storage: redis claim lease %s: %w", key, err)
	}
	return n == 1, nil
}

// DropLease gives up owner's lease key, if owner still holds it.
func (r *Redis) DropLease(ctx context.Context, key, owner string) error {
	if err := dropLease.Run(ctx, r.c, []string{key}, owner).Err(); err != nil {
		return fmt.Errorf("storage: redis drop lease %s: %w", key, err)
	}
	return nil
}
