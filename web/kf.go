package web

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/storage"
)

// KF is what the panel shows of the apps' 微信客服 channel (adapter.App).
type KF interface {
	// KFAccounts are the accounts a bot has pulled, with their last pull.
	KFAccounts(ctx context.Context, bot string) ([]storage.KFAccount, error)
	// KFCustomers are the customers of the kf conversations among users,
	// by user id; the ones it cannot name are left out.
	KFCustomers(ctx context.Context, bot string, users []string) map[string]adapter.KFCustomer
}

// kfAccount is one kf account of an app as the panel and the API show it.
type kfAccount struct {
	OpenKfID   string
	LastPullAt time.Time // zero: never pulled
	LastError  string
	Hint       string // kf.Hint of LastError's errcode; "" if none
	Today      int64  // messages sent to and from it since midnight (the card's)
}

// kfAccountsOf lists the kf accounts of b: the configured ones and every
// one pulled, by open_kfid. Nil for a bot without kf. When the database
// cannot say, the configured ones are listed as never pulled: the bots'
// list still shows, and the panel's health says the database is down.
func kfAccountsOf(ctx context.Context, src KF, b adapter.BotStatus, log *slog.Logger) []kfAccount {
	if b.KF == nil {
		return nil
	}
	out := []kfAccount{}
	for _, id := range b.KF.Accounts {
		out = append(out, kfAccount{OpenKfID: id})
	}
	if src == nil {
		return out
	}
	stored, err := src.KFAccounts(ctx, b.Name)
	if err != nil {
		log.Warn("admin: kf accounts not available", "bot", b.Name, "err", err)
		stored = nil
	}
	for _, a := range stored {
		v := kfAccount{OpenKfID: a.OpenKfID, LastPullAt: a.LastPullAt, LastError: a.LastError, Hint: kf.HintOf(a.LastError)}
		if i := slices.IndexFunc(out, func(o kfAccount) bool { return o.OpenKfID == a.OpenKfID }); i >= 0 {
			out[i] = v
		} else {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b kfAccount) int { return cmp.Compare(a.OpenKfID, b.OpenKfID) })
	return out
}

// kfAccountJSON is one account of a bot's "kf" in GET /api/bots: the
// field names are a contract with scripts. last_error carries its hint.
type kfAccountJSON struct {
	OpenKfID   string  `json:"open_kfid"`
	LastPullAt *string `json:"last_pull_at"`
	LastError  string  `json:"last_error"`
}

type kfJSON struct {
	Accounts []kfAccountJSON `json:"accounts"`
}

func kfView(accounts []kfAccount) *kfJSON {
	v := &kfJSON{Accounts: make([]kfAccountJSON, 0, len(accounts))}
	for _, a := range accounts {
		e := kfAccountJSON{OpenKfID: a.OpenKfID, LastPullAt: rfc3339(a.LastPullAt), LastError: a.LastError}
		if a.Hint != "" {
			e.LastError += " (" + a.Hint + ")"
		}
		v.Accounts = append(v.Accounts, e)
	}
	return v
}

// customersOf names the kf customers among the users of each bot (a
// message list mixes bots): one lookup per bot, by user id. Without kf
// (src nil), none.
func customersOf(ctx context.Context, src KF, usersByBot map[string][]string) map[string]map[string]adapter.KFCustomer {
	out := map[string]map[string]adapter.KFCustomer{}
	if src == nil {
		return out
	}
	for bot, users := range usersByBot {
		var kfUsers []string
		for _, u := range users {
			if adapter.IsKFUser(u) && !slices.Contains(kfUsers, u) {
				kfUsers = append(kfUsers, u)
			}
		}
		if len(kfUsers) > 0 {
			out[bot] = src.KFCustomers(ctx, bot, kfUsers)
		}
	}
	return out
}

// customer is the kf customer of user, nil if none is known.
func customer(names map[string]map[string]adapter.KFCustomer, bot, user string) *adapter.KFCustomer {
	if c, ok := names[bot][user]; ok {
		return &c
	}
	return nil
}
