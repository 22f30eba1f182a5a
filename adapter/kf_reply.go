package adapter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/storage"
)

// How the kf channel shows answers: whole, budgeted to what WeCom delivers
// for one customer message, each part sent by the outbox with kf/send_msg.

// Begin starts the reply to a customer's message: the answer is sent whole,
// in at most five parts, once it is done.
func (k *kfBot) Begin(context.Context, storage.Message) (Reply, error) { return kfReply{}, nil }

// kfReply is the reply to a customer: nothing is shown while the model
// writes; kf.Budget cuts the answer into what WeCom delivers for one
// customer message.
type kfReply struct{}

func (kfReply) Add(context.Context, string) error { return nil }
func (kfReply) Shown() bool                       { return false }

func (kfReply) Finish(_ context.Context, text string, _ bool) ([]string, error) {
	return kf.Budget(text, kfCutNote, Split), nil
}

func (r kfReply) Interrupted(ctx context.Context, notice string) ([]string, error) {
	return r.Finish(ctx, notice, true)
}

// Deliver sends one part with kf/send_msg. Its msgid is derived from the
// customer's message (its dedupe key, which names the account and WeCom's
// msgid) and the part's place in the answer, so a part re-sent after a
// crash is refused as a duplicate, which means it was delivered, and
// instances with a database each never derive the same msgid for different
// parts. What WeCom refuses for good (over the budget, outside the window,
// a person has the conversation…) is not retried.
func (k *kfBot) Deliver(ctx context.Context, part storage.OutboxPart, _ time.Duration) (string, error) {
	account, customer, ok := splitKFUser(part.UserID)
	if !ok {
		return "", permanent(fmt.Errorf("adapter: %q is not a kf conversation", part.UserID))
	}
	// An admin's send answers no message: its part id and creation time
	// name it.
	source := "send:" + k.app.cfg.Name + ":" + strconv.FormatInt(part.ID, 10) + ":" + strconv.FormatInt(part.CreatedAt.UnixNano(), 10)
	refused, err := k.store.KFRefusedSince(ctx, k.app.cfg.Name, part.UserID)
	if err != nil {
		return "", err
	}
	// A customer who refuses messages gets none until they write again
	// (the pull clears the refusal): then only the answers to their later
	// messages go.
	var sentAt time.Time
	if part.MessageID != 0 {
		m, err := k.store.GetMessage(ctx, part.MessageID)
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				err = permanent(fmt.Errorf("adapter: kf: the message answered is gone: %w", err))
			}
			return "", err
		}
		if k.clock.Now().Sub(time.Unix(m.CreateTime, 0)) > kfReplyWindow {
			return "", permanent(errors.New("adapter: kf: more than 48 h since the customer's message"))
		}
		source, sentAt = m.DedupeKey, time.Unix(m.CreateTime, 0)
	}
	if !refused.IsZero() && (part.MessageID == 0 || sentAt.Before(refused.Truncate(time.Second))) {
		return "", permanent(errors.New("adapter: kf: " + kfFailReason(kf.FailRefused)))
	}
	if part.WeComMsgID != "" {
		// WeCom accepted this part before and later reported it
		// undelivered (msg_send_fail); the admin re-sends it. The old
		// msgid would be refused as a duplicate and counted delivered: the
		// re-send gets its own, named by when it was asked for, the same
		// across this re-send's retries.
		source += ":resend:" + strconv.FormatInt(part.CreatedAt.UnixNano(), 10)
	}
	msgID := kf.OutboundMsgID(source, part.Seq)
	req := kf.TextMessage(account, customer, msgID, part.Content)
	err = k.app.tokens.Do(ctx, "kf/send_msg", func(ctx context.Context, at string) error {
		_, err := k.client.SendMsg(ctx, at, req)
		return err
	})
	switch {
	case err == nil, kf.DuplicateMsgID(err):
		return msgID, nil
	case kf.HandedOver(err):
		if err2 := k.store.SetKFHandedOver(ctx, k.app.cfg.Name, part.UserID, true); err2 != nil {
			k.log.Error("cannot record the hand-over", "err", err2)
		}
		return "", permanent(err)
	case kf.Permanent(err):
		return "", permanent(err)
	}
	return "", err
}

// channelReplier shows the answers of an app with a kf channel: a kf
// conversation's through kf, the others through the app.
type channelReplier struct {
	app Replier
	kf  Replier
}

func (c channelReplier) pick(user string) Replier {
	if IsKFUser(user) {
		return c.kf
	}
	return c.app
}

func (c channelReplier) Begin(ctx context.Context, m storage.Message) (Reply, error) {
	return c.pick(m.UserID).Begin(ctx, m)
}

func (c channelReplier) Deliver(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error) {
	return c.pick(part.UserID).Deliver(ctx, part, dupCheck)
}
