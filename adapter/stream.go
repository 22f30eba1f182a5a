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

// stream answers m with a streamed completion: its pieces go to *reply as
// they come (parts to the outbox, or the growing stream of an AI bot), the
// turns with SaveAnswer. A failed stream is retried, on a new reply, only
// while nothing was shown; afterwards the user gets what was shown and the
// Unavailable notice.
func (p *Pipeline) stream(ctx context.Context, log *slog.Logger, m storage.Message, u userTurn, sc StreamCompleter, reply *Reply) (storage.Answer, string) {
	a := storage.Answer{MessageID: m.ID, Bot: m.Bot, UserID: m.UserID}
	msgs, err := p.conversation(ctx, m, u)
	if err != nil {
		return p.failed(log, a, err)
	}
	var stored error // set when the reply refused a piece
	attempts := 0
	var answer string
	err = p.ask(ctx, log, m, func() (bool, error) {
		if attempts++; attempts > 1 {
			r, err := p.replier(m.Bot).Begin(ctx, m)
			if err != nil {
				return false, err
			}
			*reply = r
		}
		r := *reply
		var whole strings.Builder
		start, timed := p.clock.Now(), false
		_, err := sc.Stream(ctx, msgs, func(delta string) error {
			if !timed && delta != "" {
				timed = true
				p.metrics.firstToken(m.Bot, p.clock.Since(start))
			}
			whole.WriteString(delta)
			if err := r.Add(ctx, delta); err != nil {
				stored = err
				return err
			}
			return nil
		})
		answer = whole.String()
		return !r.Shown(), err
	})
	switch {
	case stored != nil && errors.Is(stored, errReplyGone):
		// Delivery of the first parts failed for good meanwhile (the
		// message is failed): nothing more is shown.
		*reply = nil
		a.Failure = reasonAbandoned
		return a, ""
	case stored != nil:
		return p.failed(log, a, stored)
	case err != nil:
		return p.failed(log, a, err)
	}
	a.UserTurn, a.AssistantTurn = u.history, answer
	return a, answer
}
