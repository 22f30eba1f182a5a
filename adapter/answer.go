package adapter

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// handle answers one message and reports whether it is done with it. Errors
// of storage leave the message as it is, to be resumed later; nothing the
// user sees carries an error.
func (p *Pipeline) handle(ctx context.Context, m storage.Message) bool {
	log := p.log.With("bot", m.Bot, "user", m.UserID, "message", m.ID)
	switch m.State {
	case storage.MessageReceived, storage.MessageAnswering:
	case storage.MessageStreaming:
		// Resumed after a stop or crash in the middle of a streamed answer:
		// its start was shown, the rest is gone with the process. The user
		// is told, rather than getting the answer again from the top.
		return p.interrupted(ctx, log, m)
	default:
		return true
	}
	// On an exclusive database the message stays received until its
	// answer is stored: both states are pending alike, and the write saved
	// is one of the few per answer on SQLite's one connection.
	if !p.cfg.Exclusive {
		if err := p.store.StartAnswer(ctx, m.ID); err != nil {
			log.Error("cannot start answer", "err", err)
			return false
		}
	}
	img, err := p.images(ctx, log, m)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("cannot store or read the message's images", "err", err)
		}
		return false
	}
	ctx, stats := withAnswerStats(ctx)
	reply, err := p.replier(m.Bot).Begin(ctx, m)
	if err != nil {
		log.Error("cannot start reply", "err", err)
		return false
	}
	a, text := p.answer(ctx, log, m, img, &reply)
	if ctx.Err() != nil {
		return false // stopping or the lease lost: the message stays pending
	}
	if reply != nil { // nil: the reply is gone, nothing more is shown
		if a.Parts, err = reply.Finish(ctx, text, a.Failure != ""); err != nil {
			log.Error("cannot finish reply", "err", err)
			return false
		}
	}
	if err := p.store.SaveAnswer(ctx, a); errors.Is(err, storage.ErrDropped) {
		// Withdrawn by the customer while it was answered, alone on the
		// database (where it stays received until now): not sent.
		log.Info("message dropped while it was answered; its answer is not sent")
		return true
	} else if err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	if len(a.Parts) > 0 {
		p.outbox.Notify()
	}
	p.finished(ctx, log, m, a, stats)
	return true
}

// replier is the channel that shows the answers of bot: its own, or parts
// sent through the outbox.
func (p *Pipeline) replier(bot string) Replier {
	if r, ok := p.repliers[bot]; ok {
		return r
	}
	return p.parts
}

// interrupted ends m, whose streamed answer was cut off, with a notice
// after what was shown.
func (p *Pipeline) interrupted(ctx context.Context, log *slog.Logger, m storage.Message) bool {
	notice := p.cfg.Replies.Interrupted
	if notice == "" {
		notice = p.cfg.Replies.Unavailable
	}
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID, Failure: reasonInterrupted}
	reply, err := p.replier(m.Bot).Begin(ctx, m)
	if err == nil {
		a.Parts, err = reply.Interrupted(ctx, notice)
	}
	if err != nil {
		log.Error("cannot end interrupted reply", "err", err)
		return false
	}
	log.Warn("streamed answer was interrupted; the user is told")
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	p.outbox.Notify()
	p.finished(ctx, log, m, a, statsOf(ctx))
	return true
}

// answer decides what to say to m, whose images (if the model sees them)
// are img: the answer to store (its turns, and Failure when the user gets
// a failure notice instead of an answer) and the text to finish the reply
// with. A streamed answer goes to *reply as it comes; a nil *reply
// afterwards means the reply is gone.
func (p *Pipeline) answer(ctx context.Context, log *slog.Logger, m storage.Message, img images, reply *Reply) (storage.Answer, string) {
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	switch m.MsgType {
	case "event":
		if m.Event == "subscribe" || m.Event == "enter_agent" {
			return a, p.cfg.Replies.Welcome
		}
		return a, ""
	case "text":
	default:
		if !img.seen {
			return a, p.cfg.Replies.TextOnly
		}
	}
	text := strings.TrimSpace(m.Content)
	if m.MsgType != "text" {
		text = "" // an image's Content is no caption (微信客服: the raw message)
	}
	var u userTurn
	if img.seen {
		if img.reason != "" {
			log.Warn("image cannot be used", "reason", img.reason)
			a.Failure = img.reason
			return a, p.cfg.Replies.ImageFailed
		}
		u = img.turn(text, p.cfg.Replies.ImagePrompt)
	} else {
		switch {
		case text == "":
			return a, p.cfg.Replies.Empty
		case IsResetCommand(text):
			a.ResetConversation = true
			return a, p.cfg.Replies.Reset
		case strings.EqualFold(text, "/help"):
			return a, p.cfg.Replies.Help
		}
		u = userTurn{msg: llm.Message{Role: llm.RoleUser, Content: text}, history: text}
	}
	if sc, ok := p.model(m.Bot).ep.LLM.(StreamCompleter); ok && p.botLLM(m.Bot).Stream {
		return p.stream(ctx, log, m, u, sc, reply)
	}
	answer, err := p.complete(ctx, log, m, u)
	if err != nil {
		return p.failed(log, a, err)
	}
	a.UserTurn, a.AssistantTurn = u.history, answer
	return a, answer
}

// userTurn is the user's turn of a message: what the model is asked
// (text, and images when it sees them) and what the conversation keeps of
// it for the later turns (the text, with a placeholder for each image).
type userTurn struct {
	msg     llm.Message
	history string
}

// failed is the answer to a message whose model call failed with err: the
// Unavailable notice.
func (p *Pipeline) failed(log *slog.Logger, a storage.Answer, err error) (storage.Answer, string) {
	log.Warn("LLM failed", "err", err)
	a.Failure = modelFailure(err)
	return a, p.cfg.Replies.Unavailable
}

// conversation is what the LLM is asked: the bot's system prompt, the
// history and the user's new turn.
func (p *Pipeline) conversation(ctx context.Context, m storage.Message, u userTurn) ([]llm.Message, error) {
	cfg := p.botLLM(m.Bot)
	history, err := p.store.History(ctx, m.Bot, m.UserID, cfg.HistoryTurns)
	if err != nil {
		return nil, err
	}
	msgs := make([]llm.Message, 0, len(history)+2)
	if cfg.SystemPrompt != "" {
		msgs = append(msgs, llm.Message{Role: llm.RoleSystem, Content: cfg.SystemPrompt})
	}
	for _, t := range history {
		msgs = append(msgs, llm.Message{Role: t.Role, Content: t.Content})
	}
	return append(msgs, u.msg), nil
}

// complete asks the LLM with the conversation so far.
func (p *Pipeline) complete(ctx context.Context, log *slog.Logger, m storage.Message, u userTurn) (string, error) {
	msgs, err := p.conversation(ctx, m, u)
	if err != nil {
		return "", err
	}
	var answer string
	err = p.ask(ctx, log, m, func() (bool, error) {
		answer, err = p.model(m.Bot).ep.LLM.Complete(ctx, msgs)
		return true, err
	})
	return answer, err
}

// ask makes the call try to the model of m's bot, each attempt within its
// endpoint's limiter, until it succeeds or it is time to give up:
//   - refused for the provider's rate limit: tried again when the limiter
//     lets calls through, while m is younger than RateLimitWait;
//   - a configuration error (bad key, unknown model): not retried, since
//     every retry would fail the same way; the log says what to fix;
//   - any other failure: retried LLM.Retries times, pausing as
//     llmRetryBackOff says (1 s, 2 s…);
//   - try says not to retry (a stream that already sent parts): not.
func (p *Pipeline) ask(ctx context.Context, log *slog.Logger, m storage.Message, try func() (retryable bool, err error)) error {
	// The storage slot is given up while the calls, their retries and
	// their pauses wait on the model.
	<-p.storing
	defer func() { p.storing <- struct{}{} }()
	bm := p.model(m.Bot)
	ep := bm.ep
	pauses := llmRetryBackOff()
	failures := 0
	for {
		permit, err := ep.limiter.acquire(ctx)
		if err != nil {
			return err
		}
		start := p.clock.Now()
		retryable, err := try()
		took := p.clock.Since(start)
		ep.limiter.release(permit, err)
		p.metrics.llmRequest(m.Bot, err, took)
		statsOf(ctx).modelTime += took
		if ctx.Err() == nil {
			ep.health.record(err)
		}
		if err == nil {
			return nil
		}
		if !retryable || errors.Is(err, llm.ErrEmpty) || ctx.Err() != nil {
			return err
		}
		switch llm.KindOf(err) {
		case llm.KindConfig:
			log.Error("the model refused the call; not retried", "err", err, "hint", llm.HintFor(err, ep.KeyName))
			return err
		case llm.KindRateLimited:
			if p.clock.Since(m.ReceivedAt) < ep.RateLimitWait {
				continue // the limiter holds the call back
			}
			return err
		}
		if failures >= bm.cfg.Retries {
			return err
		}
		failures++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.clock.After(pauses.NextBackOff()):
		}
	}
}

// IsResetCommand says whether a user's text is a command that starts the
// conversation afresh: /reset or /new, in any case, spaces around ignored.
func IsResetCommand(text string) bool {
	t := strings.TrimSpace(text)
	return strings.EqualFold(t, "/reset") || strings.EqualFold(t, "/new")
}
