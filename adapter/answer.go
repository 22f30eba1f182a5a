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
		// its first parts are out, the rest is gone with the process. The
		// user is told, rather than getting the answer again from the top.
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
	a, failure := p.answer(ctx, log, m)
	if ctx.Err() != nil {
		return false // stopping or the lease lost: the message stays pending
	}
	a.Failure = failure
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	if len(a.Parts) > 0 {
		p.outbox.Notify()
	}
	return true
}

// interrupted ends m, whose streamed answer was cut off, with a notice
// after the parts that were stored.
func (p *Pipeline) interrupted(ctx context.Context, log *slog.Logger, m storage.Message) bool {
	notice := p.cfg.Replies.Interrupted
	if notice == "" {
		notice = p.cfg.Replies.Unavailable
	}
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID, Failure: "interrupted: the service stopped while the answer was streaming"}
	if notice != "" {
		a.Parts = Split(notice, maxPartBytes)
	}
	log.Warn("streamed answer was interrupted; the user is told")
	if err := p.store.SaveAnswer(ctx, a); err != nil {
		log.Error("cannot store answer", "err", err)
		return false
	}
	p.outbox.Notify()
	return true
}

// answer decides what to say to m. failure, when set, is why the user gets
// a failure notice instead of an answer.
func (p *Pipeline) answer(ctx context.Context, log *slog.Logger, m storage.Message) (a storage.Answer, failure string) {
	a = storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	say := func(text string) storage.Answer {
		if text != "" {
			a.Parts = Split(text, maxPartBytes)
		}
		return a
	}
	switch m.MsgType {
	case "event":
		if m.Event == "subscribe" || m.Event == "enter_agent" {
			return say(p.cfg.Replies.Welcome), ""
		}
		return a, ""
	case "text":
	default:
		return say(p.cfg.Replies.TextOnly), ""
	}
	text := strings.TrimSpace(m.Content)
	switch strings.ToLower(text) {
	case "":
		return say(p.cfg.Replies.Empty), ""
	case "/reset", "/new":
		a.ResetConversation = true
		return say(p.cfg.Replies.Reset), ""
	case "/help":
		return say(p.cfg.Replies.Help), ""
	}
	if sc, ok := p.llm.(StreamCompleter); ok && p.cfg.LLM.Stream {
		return p.stream(ctx, log, m, text, sc)
	}
	answer, err := p.complete(ctx, log, m, text)
	if err != nil {
		log.Warn("LLM failed", "err", err)
		return say(p.cfg.Replies.Unavailable), "llm: " + err.Error()
	}
	a.UserTurn, a.AssistantTurn = text, answer
	return say(answer), ""
}

// conversation is what the LLM is asked: the system prompt, the history and
// the new text.
func (p *Pipeline) conversation(ctx context.Context, m storage.Message, text string) ([]llm.Message, error) {
	history, err := p.store.History(ctx, m.Bot, m.UserID, p.cfg.LLM.HistoryTurns)
	if err != nil {
		return nil, err
	}
	msgs := make([]llm.Message, 0, len(history)+2)
	if p.cfg.LLM.SystemPrompt != "" {
		msgs = append(msgs, llm.Message{Role: llm.RoleSystem, Content: p.cfg.LLM.SystemPrompt})
	}
	for _, t := range history {
		msgs = append(msgs, llm.Message{Role: t.Role, Content: t.Content})
	}
	return append(msgs, llm.Message{Role: llm.RoleUser, Content: text}), nil
}

// complete asks the LLM with the conversation so far.
func (p *Pipeline) complete(ctx context.Context, log *slog.Logger, m storage.Message, text string) (string, error) {
	msgs, err := p.conversation(ctx, m, text)
	if err != nil {
		return "", err
	}
	var answer string
	err = p.ask(ctx, log, m, func() (bool, error) {
		answer, err = p.llm.Complete(ctx, msgs)
		return true, err
	})
	return answer, err
}

// ask makes the call try to the model for m, each attempt within the
// limiter, until it succeeds or it is time to give up:
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
	pauses := llmRetryBackOff()
	failures := 0
	for {
		permit, err := p.limiter.acquire(ctx)
		if err != nil {
			return err
		}
		retryable, err := try()
		p.limiter.release(permit, err)
		p.metrics.llmRequest(m.Bot, err)
		if err == nil {
			return nil
		}
		if !retryable || errors.Is(err, llm.ErrEmpty) || ctx.Err() != nil {
			return err
		}
		switch llm.KindOf(err) {
		case llm.KindConfig:
			log.Error("the model refused the call; not retried", "err", err, "hint", llm.Hint(err))
			return err
		case llm.KindRateLimited:
			if p.clock.Since(m.ReceivedAt) < p.cfg.RateLimitWait {
				continue // the limiter holds the call back
			}
			return err
		}
		if failures >= p.cfg.LLM.Retries {
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
