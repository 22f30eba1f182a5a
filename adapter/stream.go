package adapter

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/wecombot/wecombot/storage"
)

// streamInterval is how long complete paragraphs of a streamed answer may
// wait for more text to fill their part, once the first part is out.
const streamInterval = 5 * time.Second

// streamSplitter decides when text streamed from the LLM becomes parts. The
// first complete paragraph goes out at once, so the user sees the answer
// start within a second of it being written; after that, paragraphs are
// packed into full parts (fewer messages, within WeCom's per-user limits),
// or go out after streamInterval so a slow answer keeps moving. Every part is
// a slice of the text in order: the parts join back to the exact answer.
type streamSplitter struct {
	limit    int
	text     strings.Builder
	sent     int // bytes of text already handed out as parts
	parts    int
	lastEmit time.Time
}

func newStreamSplitter(limit int) *streamSplitter {
	return &streamSplitter{limit: limit}
}

// add takes the next piece of the answer and returns the parts to send now.
func (s *streamSplitter) add(delta string, now time.Time) []string {
	s.text.WriteString(delta)
	var out []string
	pending := s.text.String()[s.sent:]
	// More than a part's worth: it cannot all go in one part anyway, so
	// full parts go now, cut where Split would cut.
	for len(pending) > s.limit {
		cut := cutPoint(pending, s.limit)
		out = append(out, pending[:cut])
		pending = pending[cut:]
	}
	if i := strings.LastIndex(pending, "\n\n"); i >= 0 && (s.parts+len(out) == 0 || now.Sub(s.lastEmit) >= streamInterval) {
		out = append(out, pending[:i+2])
	}
	return s.emitted(out, now)
}

// finish returns the parts of whatever the stream left unsent.
func (s *streamSplitter) finish() []string {
	rest := s.text.String()[s.sent:]
	if rest == "" {
		return nil
	}
	return s.emitted(Split(rest, s.limit), time.Time{})
}

func (s *streamSplitter) emitted(parts []string, now time.Time) []string {
	for _, p := range parts {
		s.sent += len(p)
	}
	if len(parts) > 0 {
		s.parts += len(parts)
		s.lastEmit = now
	}
	return parts
}

// answer is the whole text received so far.
func (s *streamSplitter) answer() string { return s.text.String() }

// started reports whether any part has been handed out.
func (s *streamSplitter) started() bool { return s.parts > 0 }

// stream answers m with a streamed completion: parts go to the outbox as
// the splitter hands them out, the rest and the conversation turns with
// SaveAnswer. A failed stream is retried only while nothing was sent;
// afterwards the user gets the parts sent so far and the Unavailable notice.
func (p *Pipeline) stream(ctx context.Context, log *slog.Logger, m storage.Message, text string, sc StreamCompleter) (storage.Answer, string) {
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	notice := func(err error) (storage.Answer, string) {
		log.Warn("LLM failed", "err", err)
		if p.cfg.Replies.Unavailable != "" {
			a.Parts = Split(p.cfg.Replies.Unavailable, maxPartBytes)
		}
		return a, modelFailure(err)
	}
	msgs, err := p.conversation(ctx, m, text)
	if err != nil {
		return notice(err)
	}
	var sp *streamSplitter
	var stored error // set when storing streamed parts failed
	stats := statsOf(ctx)
	err = p.ask(ctx, log, m, func() (bool, error) {
		sp = newStreamSplitter(maxPartBytes)
		start := p.clock.Now()
		_, err := sc.Stream(ctx, msgs, func(delta string) error {
			if sp.answer() == "" {
				p.metrics.firstToken(m.Bot, p.clock.Since(start))
			}
			parts := sp.add(delta, p.clock.Now())
			if len(parts) == 0 {
				return nil
			}
			if err := p.store.AppendParts(ctx, m.ID, m.Bot, m.UserID, parts); err != nil {
				stored = err
				return err
			}
			stats.streamed += len(parts)
			p.outbox.Notify()
			return nil
		})
		return !sp.started(), err
	})
	switch {
	case stored != nil && errors.Is(stored, storage.ErrNotFound):
		// Delivery of the first parts failed for good meanwhile (the
		// message is failed): nothing more is sent.
		return a, reasonAbandoned
	case stored != nil:
		return notice(stored)
	case err != nil:
		return notice(err)
	}
	a.UserTurn, a.AssistantTurn = text, sp.answer()
	a.Parts = sp.finish()
	return a, ""
}
