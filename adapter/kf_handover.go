package adapter

import (
	"context"
	"slices"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/storage"
)

// Who has a 微信客服 customer's conversation: the bot, or a person (a
// receptionist) it leaves the customer to.

// kfHandledByPerson is the reason stored with a customer's message the bot
// leaves to the person who has the conversation.
const kfHandledByPerson = "handled by a person"

// handOvers follows, message by message, who has each customer's
// conversation: a person after a session_status_change that gives it to
// one (or 95018 on a send, recorded by Deliver), the bot again once it
// ends. A receptionist's message alone says nothing: a mixed page's
// customer text is still the bot's to answer. The customers' messages a
// person has are stored, not answered. It returns the changes to record
// after the page is stored (a page read again gives the same changes).
func (k *kfBot) handOvers(ctx context.Context, msgs []storage.Message, byKey map[string]kf.Message) (map[string]bool, error) {
	var users []string
	for _, m := range msgs {
		if !slices.Contains(users, m.UserID) {
			users = append(users, m.UserID)
		}
	}
	human, err := k.store.KFHandedOver(ctx, k.app.cfg.Name, users, k.clock.Now().Add(-kfReplyWindow))
	if err != nil {
		return nil, err
	}
	changes := map[string]bool{}
	set := func(user string, on bool) { human[user], changes[user] = on, on }
	asked := map[string]bool{}
	for i := range msgs {
		m := &msgs[i]
		km := byKey[m.DedupeKey]
		switch {
		case km.EventType() == kf.EventSessionStatusChange:
			set(m.UserID, km.Event.ChangeType != kf.ChangeEnded)
			asked[m.UserID] = true
		case m.State == storage.MessageReceived && human[m.UserID] && !asked[m.UserID]:
			// Recorded before this page: the end of the person's
			// conversation may have come without an event seen here
			// (95018 alone marks it), so WeCom is asked once.
			asked[m.UserID] = true
			if k.bots(ctx, m.UserID) {
				set(m.UserID, false)
				continue
			}
			fallthrough
		case m.State == storage.MessageReceived && human[m.UserID]:
			m.State, m.Error = storage.MessageIgnored, kfHandledByPerson
		}
	}
	return changes, nil
}

// bots asks WeCom whether the conversation of user is the API's to answer
// (kf/service_state/get: new or the assistant's). When WeCom cannot say,
// the answer is no: a person may be talking to the customer.
func (k *kfBot) bots(ctx context.Context, user string) bool {
	account, customer, _ := splitKFUser(user)
	var state int
	err := k.app.tokens.Do(ctx, "kf/service_state/get", func(ctx context.Context, at string) error {
		var err error
		state, err = k.client.ServiceState(ctx, at, account, customer)
		return err
	})
	if err != nil {
		k.log.Warn("cannot read the kf conversation's state; leaving the customer to the person", "open_kfid", account,
			"err", Redact(err.Error()), "hint", kf.Hint(err))
		return false
	}
	return state == kf.StateNew || state == kf.StateAssistant
}
