package adapter

// The AI bot channel in callback mode shows an answer as a stream that WeCom
// polls for, about once a second, until 6 minutes after the user's message:
// each poll (on any instance) gets the stream's stored text. The reply below
// writes that text as the model streams; what does not fit in the stream,
// or comes after the poll window, goes out once through the message's
// response_url, as a part of the outbox.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/storage"
)

const (
	// streamCutoff is when a stream still growing is finished with what it
	// has: WeCom stops polling 6 minutes after the user's message, and the
	// last poll must see the stream end.
	streamCutoff = 5*time.Minute + 30*time.Second
	// streamWriteEvery is how often a growing stream's text is stored:
	// WeCom polls about once a second, so more writes show nothing more.
	streamWriteEvery = time.Second
)

// AIBotStore is what the AI bot channel needs of storage.
type AIBotStore interface {
	CreateAIBotStream(ctx context.Context, s storage.AIBotStream) (storage.AIBotStream, bool, error)
	GetAIBotStream(ctx context.Context, bot, streamID string) (storage.AIBotStream, error)
	UpdateAIBotStream(ctx context.Context, bot, streamID, content string) error
	FinishAIBotStream(ctx context.Context, bot, streamID, content string) error
	ClaimResponseURL(ctx context.Context, bot, streamID string, now time.Time) (bool, error)
	SetAIBotFeedback(ctx context.Context, bot, feedbackID string, f storage.AIBotFeedback) (storage.AIBotStream, error)
	GetMessage(ctx context.Context, id int64) (storage.Message, error)
	SetMessageState(ctx context.Context, id int64, state, reason string) error
}

// streamID is the stream that answers message msgID of bot: derived, so
// that a repeated callback, on any instance, and the worker answering it
// all name the same stream without asking each other. It is also the
// stream's feedback id.
func streamID(bot, msgID string) string {
	sum := sha256.Sum256([]byte(bot + "\x00" + msgID))
	return hex.EncodeToString(sum[:16])
}

// aibotBot is one configured AI bot at run time.
type aibotBot struct {
	cfg     BotConfig
	codec   *aibot.Codec // callback mode
	store   AIBotStore
	clock   clockwork.Clock
	log     *slog.Logger
	http    *http.Client
	replies Replies
	metrics *Metrics
}

// FetchMedia downloads an image of the bot's messages: its URL (valid 5
// minutes) gives AES-256-CBC bytes, decrypted with the message's aeskey
// (long connection) or the bot's EncodingAESKey (callback mode).
func (b *aibotBot) FetchMedia(ctx context.Context, ref MediaRef, limit int64) ([]byte, error) {
	keyText := ref.AESKey
	if keyText == "" {
		keyText = b.cfg.EncodingAESKey
	}
	key, err := aibot.MediaKey(keyText)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("aibot: image URL: %w", err)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("aibot: download image: %w", withoutURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("aibot: download image: %w (the URL is valid 5 minutes)", statusError(resp.StatusCode))
	}
	// The padding adds at most 32 bytes to the file.
	data, err := readLimited(resp.Body, limit+32)
	if err != nil {
		if errors.Is(err, errMediaTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("aibot: download image: %w", withoutURL(err))
	}
	plain, err := aibot.DecryptMedia(key, data)
	if err != nil {
		return nil, err
	}
	if int64(len(plain)) > limit {
		return nil, errMediaTooLarge
	}
	return plain, nil
}

// withoutURL is err without the URL a *url.Error carries: a media URL is
// long and says nothing to the admin.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Begin starts the reply to m on its stream. A message accepted but not
// started before the poll window closed (a crash, a long queue) is
// answered through its response_url instead.
func (b *aibotBot) Begin(ctx context.Context, m storage.Message) (Reply, error) {
	s, _, err := b.store.CreateAIBotStream(ctx, storage.AIBotStream{
		Bot: m.Bot, StreamID: streamID(m.Bot, m.DedupeKey), MessageID: m.ID, FeedbackID: streamID(m.Bot, m.DedupeKey),
		CreatedAt: m.ReceivedAt,
	})
	if err != nil {
		return nil, err
	}
	r := &streamReply{b: b, m: m, s: s, stored: len(s.Content), cut: s.Finished}
	if !r.cut && b.clock.Since(m.ReceivedAt) >= streamCutoff {
		r.closeWindow(ctx)
	}
	return r, nil
}

// streamReply is the reply to one message on its stream.
type streamReply struct {
	b         *aibotBot
	m         storage.Message
	s         storage.AIBotStream
	text      strings.Builder // the answer so far
	stored    int             // bytes of it in the stream
	lastWrite time.Time
	// cut: the stream was finished before the answer (the poll window
	// closed): the whole answer goes through response_url.
	cut bool
}

func (r *streamReply) Add(ctx context.Context, delta string) error {
	r.text.WriteString(delta)
	if r.cut {
		return nil
	}
	now := r.b.clock.Now()
	if now.Sub(r.m.ReceivedAt) >= streamCutoff {
		r.closeWindow(ctx)
		return nil
	}
	if now.Sub(r.lastWrite) < streamWriteEvery {
		return nil
	}
	head, _ := aibot.Cut(r.text.String(), aibot.MaxStreamBytes)
	if len(head) <= r.stored {
		return nil
	}
	if r.stored == 0 {
		// Something is shown: after a crash the message ends with the
		// interrupted notice rather than starting again.
		if err := r.b.store.SetMessageState(ctx, r.m.ID, storage.MessageStreaming, ""); err != nil {
			return err
		}
	}
	switch err := r.b.store.UpdateAIBotStream(ctx, r.m.Bot, r.s.StreamID, head); {
	case errors.Is(err, storage.ErrStreamFinished):
		r.cut = true // a poll closed the window (aibotBot.refresh)
	case err != nil:
		return err
	default:
		r.stored, r.lastWrite = len(head), now
	}
	return nil
}

// closeWindow finishes the stream with what it shows and a note that the
// answer follows.
func (r *streamReply) closeWindow(ctx context.Context) {
	r.cut = true
	head, _ := aibot.Cut(r.text.String(), aibot.MaxStreamBytes)
	if len(head) < r.stored {
		head = r.s.Content
	}
	err := finishStream(ctx, r.b.store, r.m.Bot, r.s.StreamID, head, r.b.replies.Continued)
	if err != nil && !errors.Is(err, storage.ErrStreamFinished) {
		r.b.log.Warn("cannot close the stream of a slow answer; WeCom stops polling it anyway", "bot", r.m.Bot, "message", r.m.ID, "err", err)
	}
}

// finishStream finishes stream id of bot with content and, when it fits,
// note after it.
func finishStream(ctx context.Context, store AIBotStore, bot, id, content, note string) error {
	final := content
	if note != "" {
		if final != "" {
			final += "\n\n"
		}
		final += note
	}
	if len(final) > aibot.MaxStreamBytes {
		final = content
	}
	return store.FinishAIBotStream(ctx, bot, id, final)
}

func (r *streamReply) Shown() bool { return r.stored > 0 || r.cut }

func (r *streamReply) Finish(ctx context.Context, text string, failed bool) ([]string, error) {
	if failed {
		// A notice after whatever was shown.
		shown := r.text.String()[:r.stored]
		if !r.cut {
			err := finishStream(ctx, r.b.store, r.m.Bot, r.s.StreamID, shown, text)
			if !errors.Is(err, storage.ErrStreamFinished) {
				return nil, err // nil: the notice is in the stream
			}
		}
		return responseParts(text), nil
	}
	if !r.cut {
		head, rest := aibot.Cut(text, aibot.MaxStreamBytes)
		err := r.b.store.FinishAIBotStream(ctx, r.m.Bot, r.s.StreamID, head)
		switch {
		case err == nil:
			return responseParts(rest), nil
		case errors.Is(err, storage.ErrStreamFinished):
			// A poll closed the window meanwhile: the whole answer
			// follows through response_url.
		default:
			return nil, err
		}
	}
	return responseParts(text), nil
}

func (r *streamReply) Interrupted(ctx context.Context, notice string) ([]string, error) {
	if r.cut || r.b.clock.Since(r.m.ReceivedAt) >= streamCutoff {
		return responseParts(notice), nil
	}
	err := finishStream(ctx, r.b.store, r.m.Bot, r.s.StreamID, r.s.Content, notice)
	if errors.Is(err, storage.ErrStreamFinished) {
		return responseParts(notice), nil
	}
	return nil, err
}

// responseParts is text as the one part a response_url takes (it can be
// used once), cut to what WeCom shows.
func responseParts(text string) []string {
	if strings.TrimSpace(text) == "" {
		return nil
	}
	head, _ := aibot.Cut(text, aibot.MaxStreamBytes)
	return []string{head}
}

// Deliver sends a part through the response_url of the message it
// answers: once, within the hour WeCom allows. Every failure is final,
// since the URL cannot be tried again.
func (b *aibotBot) Deliver(ctx context.Context, part storage.OutboxPart, _ time.Duration) (string, error) {
	if part.MessageID == 0 {
		return "", permanent(errors.New("an AI bot in callback mode can only answer a message (through its response_url)"))
	}
	m, err := b.store.GetMessage(ctx, part.MessageID)
	if err != nil {
		return "", err
	}
	id := streamID(m.Bot, m.DedupeKey)
	claimed, err := b.store.ClaimResponseURL(ctx, b.cfg.Name, id, b.clock.Now())
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return "", permanent(errors.New("the message has no stream, so no response_url"))
		}
		return "", err
	}
	if !claimed {
		return "", permanent(errors.New("the response_url is used, expired (1 h) or missing"))
	}
	s, err := b.store.GetAIBotStream(ctx, b.cfg.Name, id)
	if err != nil {
		return "", permanent(fmt.Errorf("response_url claimed, then: %w", err))
	}
	if err := aibot.PostResponse(ctx, b.http, s.ResponseURL, part.Content, ""); err != nil {
		return "", permanent(err)
	}
	return "", nil
}

// permanentError is a delivery failure that trying again cannot mend.
type permanentError struct{ error }

func permanent(err error) error { return permanentError{err} }

func (e permanentError) Unwrap() error { return e.error }
