package adapter

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/storage"
)

// The 微信客服 events the bot acts on: a customer entering (the welcome),
// withdrawing a message, and WeCom reporting a part undelivered.

// welcome answers a new enter_session that carries a welcome code with
// kf.welcome, at once: the code lives 20 s and is good for one send, so
// an older event (history, a replay) is not answered.
func (k *kfBot) welcome(ctx context.Context, log *slog.Logger, m storage.Message, km kf.Message) {
	if k.cfg.Welcome == "" || km.Event == nil || km.Event.WelcomeCode == "" || m.CreateTime < k.clock.Now().Add(-time.Minute).Unix() {
		return
	}
	req := kf.EventText(km.Event.WelcomeCode, kf.OutboundMsgID(m.DedupeKey, 0), k.cfg.Welcome)
	err := k.app.tokens.Do(ctx, "kf/send_msg_on_event", func(ctx context.Context, at string) error {
		_, err := k.client.SendMsgOnEvent(ctx, at, req)
		return err
	})
	if err != nil && !kf.DuplicateMsgID(err) {
		log.Warn("kf welcome not sent", "customer", km.Customer(), "err", Redact(err.Error()), "hint", kf.Hint(err))
	}
}

// kfRecalled is the reason stored with a message the customer withdrew
// before the bot answered it.
const kfRecalled = "withdrawn by the customer"

// recalled leaves unanswered a message the customer withdrew, unless its
// answer has started (several instances) or is stored: alone on the
// database the message stays received while it is answered, and its
// answer is dropped unsent (storage.ErrDropped).
func (k *kfBot) recalled(ctx context.Context, log *slog.Logger, account string, km kf.Message) {
	if km.Event == nil || km.Event.RecallMsgID == "" {
		return
	}
	if _, err := k.store.DropUnanswered(ctx, k.app.cfg.Name, kfDedupeKey(account, km.Event.RecallMsgID), kfRecalled); err != nil {
		log.Error("cannot drop a withdrawn kf message", "err", err)
	}
}

// sendFailed marks the part WeCom could not deliver after all failed, with
// the reason.
func (k *kfBot) sendFailed(ctx context.Context, log *slog.Logger, km kf.Message) {
	if km.Event == nil || km.Event.FailMsgID == "" {
		return
	}
	reason := kfUndelivered(km.Event.FailType)
	err := k.store.FailDeliveredPart(ctx, k.app.cfg.Name, km.Event.FailMsgID, reason)
	if err != nil && !errors.Is(err, storage.ErrNotFound) { // not found: a welcome, or pruned
		log.Error("cannot record a kf delivery failure", "err", err)
	}
	if km.Event.FailType == kf.FailRefused {
		// Nothing more is sent to them until they write again (Deliver).
		if err := k.store.SetKFRefused(ctx, k.app.cfg.Name, kfUser(km.Account(), km.Customer())); err != nil {
			log.Error("cannot record that the customer refuses messages", "err", err)
		}
	}
}

// kfUndeliveredPrefix starts the reason stored with a part WeCom could not
// deliver after it accepted it (msg_send_fail): "… (fail_type 10): the
// customer refuses messages". ParseFailure reads the fail_type back.
const kfUndeliveredPrefix = "WeCom could not deliver it (fail_type "

func kfUndelivered(failType int) string {
	return kfUndeliveredPrefix + strconv.Itoa(failType) + "): " + kfFailReason(failType)
}

// KFFailType is the fail_type of a reason stored for a msg_send_fail (the
// detail ParseFailure gives with FailureKFUndelivered, or the whole
// reason).
func KFFailType(reason string) (int, bool) {
	rest, ok := strings.CutPrefix(reason, kfUndeliveredPrefix)
	if !ok {
		rest, ok = strings.CutPrefix(reason, "fail_type ")
	}
	if !ok {
		return 0, false
	}
	n, _, _ := strings.Cut(rest, ")")
	n, _, _ = strings.Cut(n, ":")
	t, err := strconv.Atoi(n)
	return t, err == nil
}

// kfFailReason explains a msg_send_fail's fail_type (KF.md §4).
func kfFailReason(failType int) string {
	switch failType {
	case kf.FailAccountDeleted:
		return "the customer-service account was deleted"
	case kf.FailAppClosed:
		return "the app was closed"
	case kf.FailExpired:
		return "more than 48 h since the customer's last message"
	case kf.FailSessionClosed:
		return "the conversation was closed"
	case kf.FailOverLimit:
		return "over the 5 messages allowed per customer message"
	case kf.FailRefused:
		return "the customer refuses messages"
	}
	return "a reason without explanation here"
}
