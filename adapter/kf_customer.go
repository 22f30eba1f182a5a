package adapter

import (
	"context"
	"sync"
	"time"

	"github.com/wecombot/wecombot/adapter/kf"
)

// KFCustomer is a WeChat customer of a kf conversation as the panel shows
// them: the account they write to and their nickname.
type KFCustomer struct {
	OpenKfID       string
	ExternalUserID string
	Nickname       string
}

// KFCustomers looks up the customers of the kf conversations among users
// (user ids of bot name), by user id. Users that are not kf conversations,
// customers WeCom does not know and, while kf/customer/batchget fails, every
// customer not cached are left out: the caller shows the raw id. A bot
// without kf has none.
func (a *App) KFCustomers(ctx context.Context, name string, users []string) map[string]KFCustomer {
	k, ok := a.kfbots[name]
	if !ok {
		return map[string]KFCustomer{}
	}
	return k.customers(ctx, users)
}

// The panel shows a nickname for every kf conversation of a page: calling
// kf/customer/batchget for each render would cost a WeCom call per page
// view (and WeCom rate-limits the API per app). Nicknames rarely change and
// are not worth a table (they are WeCom's data, and every instance can ask
// for them), so each process keeps them in memory for kfNameTTL, looks up
// the missing ones of a page in one call per 100, and after a failed call
// waits kfNameRetry before the next: an outage costs one call a minute, not
// one per page.
const (
	kfNameTTL   = time.Hour
	kfNameRetry = time.Minute
	// kfNamesMax bounds the cache: beyond it, expired entries are dropped,
	// and all of them if none is.
	kfNamesMax = 10000
	// kfBatchMax is what kf/customer/batchget takes in one call.
	kfBatchMax = 100
)

// kfNames are the nicknames looked up, by external_userid (customer ids
// are the corp's, the same on each of the app's accounts).
type kfNames struct {
	mu          sync.Mutex
	byID        map[string]kfName
	failedUntil time.Time // no call before it: the last one failed
}

type kfName struct {
	nickname string
	known    bool // WeCom knows the customer
	until    time.Time
}

func (k *kfBot) customers(ctx context.Context, users []string) map[string]KFCustomer {
	out := map[string]KFCustomer{}
	now := k.clock.Now()
	var missing []string
	usersOf := map[string][]string{} // external_userid → its conversations not cached
	k.names.mu.Lock()
	for _, u := range users {
		account, customer, ok := splitKFUser(u)
		if !ok {
			continue
		}
		if n, ok := k.names.byID[customer]; ok && now.Before(n.until) {
			if n.known {
				out[u] = KFCustomer{OpenKfID: account, ExternalUserID: customer, Nickname: n.nickname}
			}
			continue
		}
		if _, ok := usersOf[customer]; !ok {
			missing = append(missing, customer)
		}
		usersOf[customer] = append(usersOf[customer], u)
	}
	wait := now.Before(k.names.failedUntil)
	k.names.mu.Unlock()
	if wait {
		return out
	}
	for len(missing) > 0 {
		batch := missing[:min(len(missing), kfBatchMax)]
		missing = missing[len(batch):]
		var resp kf.BatchGetResponse
		err := k.app.tokens.Do(ctx, "kf/customer/batchget", func(ctx context.Context, at string) error {
			var err error
			resp, err = k.client.BatchGetCustomers(ctx, at, kf.BatchGetRequest{ExternalUserIDs: batch})
			return err
		})
		if err != nil {
			k.log.Warn("kf customers' nicknames not available; the panel shows their ids", "err", Redact(err.Error()), "hint", kf.Hint(err))
			k.names.mu.Lock()
			k.names.failedUntil = now.Add(kfNameRetry)
			k.names.mu.Unlock()
			return out
		}
		k.names.mu.Lock()
		k.names.prune(now)
		until := now.Add(kfNameTTL)
		for _, id := range batch { // those WeCom leaves out are unknown
			k.names.byID[id] = kfName{until: until}
		}
		for _, c := range resp.Customers {
			if _, asked := usersOf[c.ExternalUserID]; !asked {
				continue
			}
			k.names.byID[c.ExternalUserID] = kfName{nickname: c.Nickname, known: true, until: until}
			for _, u := range usersOf[c.ExternalUserID] {
				account, _, _ := splitKFUser(u)
				out[u] = KFCustomer{OpenKfID: account, ExternalUserID: c.ExternalUserID, Nickname: c.Nickname}
			}
		}
		k.names.mu.Unlock()
	}
	return out
}

// prune keeps the cache under kfNamesMax entries. Called with mu held.
func (n *kfNames) prune(now time.Time) {
	if len(n.byID) < kfNamesMax {
		return
	}
	for id, e := range n.byID {
		if !now.Before(e.until) {
			delete(n.byID, id)
		}
	}
	if len(n.byID) >= kfNamesMax {
		clear(n.byID)
	}
}
