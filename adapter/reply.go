package adapter

import (
	"context"
	"errors"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// Replier is a channel's way of showing answers: the pipeline works out
// what to say to a message, and the channel of the message's bot turns it
// into what WeCom shows (parts sent one by one for an app, a stream growing
// in place for an AI bot). Whatever it cannot show at once it returns as
// parts, which the outbox delivers through the same channel (Deliver).
type Replier interface {
	// Begin starts the reply to m.
	Begin(ctx context.Context, m storage.Message) (Reply, error)
	// Deliver sends one stored part (from the outbox) to WeCom and returns
	// WeCom's id for it, if any. dupCheck > 0 marks a resend whose first
	// attempt may have been delivered.
	Deliver(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error)
}

// Reply is the reply to one message while it is worked out.
type Reply interface {
	// Add takes the next piece of a streamed answer. An error stops the
	// stream (errReplyGone: the reply cannot go on).
	Add(ctx context.Context, delta string) error
	// Shown reports whether the user has seen any of the answer, so it can
	// no longer start again from the top.
	Shown() bool
	// Finish ends the reply with text: the whole answer when the model
	// answered, or, when failed, a notice that follows whatever was shown.
	// It returns the parts the outbox is to deliver after the answer is
	// stored.
	Finish(ctx context.Context, text string, failed bool) ([]string, error)
	// Interrupted ends a reply that a stop or a crash cut off after some
	// of it was shown, with notice.
	Interrupted(ctx context.Context, notice string) ([]string, error)
}

// errReplyGone says a reply cannot go on: the message stopped being
// answered meanwhile (its delivery failed for good).
var errReplyGone = errors.New("adapter: reply is gone")

// partsReplier replies with parts of at most maxPartBytes, each sent on its
// own through send (a self-built app's message/send; the App sets it). A streamed answer's
// parts are stored as its paragraphs complete (streamSplitter), so the user
// reads the start while the model writes the rest.
type partsReplier struct {
	store  MessageStore
	outbox interface{ Notify() }
	now    func() time.Time
	send   func(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error)
}

func (r *partsReplier) Begin(_ context.Context, m storage.Message) (Reply, error) {
	return &partsReply{r: r, m: m, sp: newStreamSplitter(maxPartBytes)}, nil
}

func (r *partsReplier) Deliver(ctx context.Context, part storage.OutboxPart, dupCheck time.Duration) (string, error) {
	return r.send(ctx, part, dupCheck)
}

type partsReply struct {
	r  *partsReplier
	m  storage.Message
	sp *streamSplitter
}

func (p *partsReply) Add(ctx context.Context, delta string) error {
	parts := p.sp.add(delta, p.r.now())
	if len(parts) == 0 {
		return nil
	}
	if err := p.r.store.AppendParts(ctx, p.m.ID, p.m.Bot, p.m.UserID, parts); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return errReplyGone
		}
		return err
	}
	statsOf(ctx).streamed += len(parts)
	p.r.outbox.Notify()
	return nil
}

func (p *partsReply) Shown() bool { return p.sp.started() }

func (p *partsReply) Finish(_ context.Context, text string, failed bool) ([]string, error) {
	if text == "" {
		return nil, nil
	}
	if !failed && p.sp.started() {
		// The streamed answer: what the splitter has not handed out.
		return p.sp.finish(), nil
	}
	return Split(text, maxPartBytes), nil
}

func (p *partsReply) Interrupted(ctx context.Context, notice string) ([]string, error) {
	return p.Finish(ctx, notice, true)
}
