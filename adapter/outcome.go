package adapter

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// answerStats is what the answer to one message cost: the time its calls
// to the model took (retries included, not the pauses between them or the
// wait for the call limiter), and the parts streamed before the answer was
// stored. It rides in the context of the message's
// answer (withAnswerStats), which only the message's worker uses.
type answerStats struct {
	modelTime time.Duration
	streamed  int
}

type answerStatsKey struct{}

func withAnswerStats(ctx context.Context) (context.Context, *answerStats) {
	s := &answerStats{}
	return context.WithValue(ctx, answerStatsKey{}, s), s
}

// statsOf is the stats of ctx's answer; a throwaway when it has none.
func statsOf(ctx context.Context) *answerStats {
	if s, ok := ctx.Value(answerStatsKey{}).(*answerStats); ok {
		return s
	}
	return &answerStats{}
}

// finished counts and logs the end of the answer a to m: one line per
// message answered or failed, without the message's text (at debug level
// only).
func (p *Pipeline) finished(ctx context.Context, log *slog.Logger, m storage.Message, a storage.Answer, stats *answerStats) {
	parts := stats.streamed + len(a.Parts)
	result := resultAnswered
	switch {
	case a.Failure != "":
		result = resultFailed
	case parts == 0:
		result = resultIgnored
	}
	p.metrics.message(m.Bot, result)
	level, msg := slog.LevelInfo, "message "+result
	if result == resultIgnored {
		level = slog.LevelDebug
	}
	attrs := []any{"result", result, "model_time", stats.modelTime.Round(time.Millisecond), "parts", parts}
	if a.Failure != "" {
		cause, _ := ParseFailure(a.Failure)
		attrs = append(attrs, "cause", cause)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		attrs = append(attrs, "text", m.Content)
	}
	log.Log(ctx, level, msg, attrs...)
}

// Failure causes of a message besides the model's (llm.CauseOf), as
// ParseFailure reports them.
const (
	FailureInterrupted = "interrupted" // the service stopped mid-stream
	FailureAbandoned   = "abandoned"   // the first streamed parts could not be delivered
	// A kf customer's message left to the person who has the conversation
	// (stored ignored).
	FailureKFPerson = "kf_person"
	// A kf customer's message withdrawn before the bot answered it
	// (stored ignored).
	FailureKFRecalled = "kf_recalled"
	// An answer WeCom accepted and then could not deliver (msg_send_fail);
	// the detail starts "fail_type N" (KFFailType).
	FailureKFUndelivered = "kf_undelivered"
)

// modelFailurePrefix starts the stored reason of a message the model failed
// to answer: "model <cause>: <error>".
const modelFailurePrefix = "model "

// Stored failure reasons that are not the model's.
const (
	reasonInterrupted = FailureInterrupted + ": the service stopped while the answer was streaming"
	reasonAbandoned   = "streamed answer abandoned: its first parts could not be delivered"
)

// modelFailure is the stored reason of a message whose answer failed with
// err: the model's cause first, so that the panel can say it in the
// admin's language ("model unreachable: llm: chat completion: dial tcp:
// …"); errors that are not the model's (storage) as they are.
func modelFailure(err error) string {
	if cause := llm.CauseOf(err); cause != "" {
		return modelFailurePrefix + cause + ": " + err.Error()
	}
	return err.Error()
}

// ParseFailure splits the stored failure reason of a message into its cause
// (an llm.Cause…, FailureInterrupted, FailureAbandoned, FailureKF…; "" for any other,
// such as a delivery's) and the error behind it.
func ParseFailure(reason string) (cause, detail string) {
	if rest, ok := strings.CutPrefix(reason, modelFailurePrefix); ok {
		if c, d, ok := strings.Cut(rest, ": "); ok && isModelCause(c) {
			return c, d
		}
	}
	switch {
	case strings.HasPrefix(reason, FailureInterrupted+": "):
		return FailureInterrupted, strings.TrimPrefix(reason, FailureInterrupted+": ")
	case reason == reasonAbandoned:
		return FailureAbandoned, reason
	case reason == kfHandledByPerson:
		return FailureKFPerson, reason
	case reason == kfRecalled:
		return FailureKFRecalled, reason
	case strings.HasPrefix(reason, kfUndeliveredPrefix):
		return FailureKFUndelivered, "fail_type " + strings.Replace(strings.TrimPrefix(reason, kfUndeliveredPrefix), ")", "", 1)
	case strings.HasPrefix(reason, "llm: "):
		// Stored before causes were: the error, once prefixed twice.
		return llm.CauseFailed, strings.TrimPrefix(reason, "llm: ")
	}
	return "", reason
}

func isModelCause(c string) bool {
	switch c {
	case llm.CauseUnreachable, llm.CauseBadKey, llm.CauseUnknownModel, llm.CauseNoQuota,
		llm.CauseRateLimited, llm.CauseTimeout, llm.CauseFailed:
		return true
	}
	return false
}
