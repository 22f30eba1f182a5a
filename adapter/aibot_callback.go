package adapter

// The AI bot's callbacks (callback mode): the same URL as an app's,
// /wecom/{name}/callback, with JSON bodies and an encrypted JSON answer.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/storage"
)

// aibotStatus maps the codec's refusals to HTTP statuses.
func aibotStatus(err error) int {
	switch {
	case errors.Is(err, aibot.ErrSignature):
		return http.StatusForbidden
	case errors.Is(err, aibot.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusBadRequest
	}
}

// verifyAIBotURL answers WeCom's URL check with the decrypted echostr.
func (a *App) verifyAIBotURL(c *gin.Context, b *aibotBot) {
	q, err := aibot.ParseQuery(c.Request.URL.RawQuery)
	if err == nil {
		var plain []byte
		if plain, err = b.codec.VerifyURL(q); err == nil {
			a.log.Info("callback URL verified", "bot", b.cfg.Name)
			c.Data(http.StatusOK, "text/plain; charset=utf-8", plain)
			return
		}
	}
	a.refuse(c, aibotStatus(err), "cannot verify URL", err)
}

// receiveAIBot takes one callback of an AI bot. A message is stored before
// the answer, which is at once the start of its stream (empty, unfinished):
// the model is never waited for. A refresh poll gets the stream as stored.
func (a *App) receiveAIBot(c *gin.Context, b *aibotBot) {
	q, err := aibot.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		a.refuse(c, http.StatusBadRequest, "malformed query", err)
		return
	}
	plain, err := b.codec.Open(q, c.Request.Body)
	if err != nil {
		a.refuse(c, aibotStatus(err), "cannot open callback", err)
		return
	}
	msg, err := aibot.ParseMessage(plain)
	if err != nil {
		a.refuse(c, http.StatusBadRequest, "malformed message", err)
		return
	}
	if b.cfg.BotID != "" && msg.AIBotID != b.cfg.BotID {
		a.refuse(c, http.StatusForbidden, "callback of another bot", nil)
		return
	}
	// Stored before WeCom hears the answer, whatever the client does with
	// the connection meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 4*time.Second)
	defer cancel()
	reply, err := b.callback(ctx, a.pipeline, msg)
	if err != nil {
		a.log.Error("cannot store AI bot callback; WeCom will retry", "bot", b.cfg.Name, "msgtype", msg.MsgType, "err", err)
		c.String(http.StatusInternalServerError, "")
		return
	}
	if reply.IsEmpty() {
		c.Status(http.StatusOK)
		return
	}
	body, err := b.codec.Seal(reply, q.Nonce, b.clock.Now())
	if err != nil {
		a.log.Error("cannot seal AI bot reply", "bot", b.cfg.Name, "err", err)
		c.String(http.StatusInternalServerError, "")
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

// callback works out the passive reply to msg.
func (b *aibotBot) callback(ctx context.Context, p *Pipeline, msg aibot.Message) (aibot.Reply, error) {
	switch msg.MsgType {
	case aibot.TypeStream:
		return b.refresh(ctx, msg.Stream.ID)
	case aibot.TypeEvent:
		return b.event(ctx, p, msg)
	}
	if msg.MsgID == "" {
		return aibot.Reply{}, fmt.Errorf("%s message without msgid", msg.MsgType)
	}
	id := streamID(b.cfg.Name, msg.MsgID)
	// The stream first, then the message: a worker that starts on the
	// message finds its stream, response_url included.
	s, _, err := b.store.CreateAIBotStream(ctx, storage.AIBotStream{
		Bot: b.cfg.Name, StreamID: id, FeedbackID: id, ResponseURL: msg.ResponseURL, CreatedAt: b.clock.Now(),
	})
	if err != nil {
		return aibot.Reply{}, err
	}
	_, err = p.Accept(ctx, inboundOf(b.cfg.Name, msg))
	if err != nil && !errors.Is(err, ErrInFlight) {
		return aibot.Reply{}, err
	}
	// New or repeated (here or on another instance), the answer is the
	// stream as it is: a repeat shows what the first has produced so far.
	return aibot.PassiveStream(id, s.Content, s.Finished, s.FeedbackID), nil
}

// inboundOf is the stored form of an AI bot message: one conversation per
// group chat, whose users' turns are marked with their sender, one per user
// in single chats. A message without text (an image, a file) is stored
// with its type, for the pipeline's text_only reply; its images (of an
// image, of a mixed message, of a quote) for the pipeline to download.
func inboundOf(bot string, msg aibot.Message) Inbound {
	in := Inbound{Bot: bot, UserID: msg.Conversation(), MsgType: msg.MsgType, DedupeKey: msg.MsgID, CreateTime: msg.CreateTime,
		Images: aibotImages(msg)}
	if msg.MsgType == aibot.TypeMixed && len(in.Images) > 0 {
		in.MsgType = aibot.TypeImage // images alone; with text it is text below
	}
	if msg.IsGroup() {
		in.UserID = groupConversation(msg.ChatID)
	}
	if text, ok := msg.Prompt(); ok {
		in.MsgType = "text"
		in.Content = text
		if msg.IsGroup() && !strings.HasPrefix(strings.TrimSpace(text), "/") {
			in.Content = msg.Sender() + ": " + text
		}
	}
	return in
}

// aibotImages are the images of msg: its image or the images of its mixed
// body, then those of the message it quotes.
func aibotImages(msg aibot.Message) []MediaRef {
	var refs []MediaRef
	add := func(img *aibot.Media) {
		if img != nil && img.URL != "" {
			refs = append(refs, MediaRef{URL: img.URL, AESKey: img.AESKey})
		}
	}
	addBody := func(msgType string, img *aibot.Media, mixed *aibot.Mixed) {
		switch msgType {
		case aibot.TypeImage:
			add(img)
		case aibot.TypeMixed:
			if mixed != nil {
				for _, it := range mixed.Items {
					if it.MsgType == aibot.TypeImage {
						add(it.Image)
					}
				}
			}
		}
	}
	addBody(msg.MsgType, msg.Image, msg.Mixed)
	if q := msg.Quote; q != nil {
		addBody(q.MsgType, q.Image, q.Mixed)
	}
	return refs
}

// groupConversation is the user id under which a group chat's messages
// and turns are stored.
func groupConversation(chatID string) string { return "chat:" + chatID }

// refresh answers WeCom's poll of stream id with its stored text; an
// unknown stream is finished, so WeCom stops asking. A stream still growing
// when the poll window closes is finished here with what it has (its
// answer follows through response_url, streamReply).
func (b *aibotBot) refresh(ctx context.Context, id string) (aibot.Reply, error) {
	s, err := b.store.GetAIBotStream(ctx, b.cfg.Name, id)
	if errors.Is(err, storage.ErrNotFound) {
		return aibot.PassiveStream(id, "", true, ""), nil
	}
	if err != nil {
		return aibot.Reply{}, err
	}
	if !s.Finished && b.clock.Since(s.CreatedAt) >= streamCutoff {
		err := finishStream(ctx, b.store, b.cfg.Name, id, s.Content, b.replies.Continued)
		if err != nil && !errors.Is(err, storage.ErrStreamFinished) {
			return aibot.Reply{}, err
		}
		if s, err = b.store.GetAIBotStream(ctx, b.cfg.Name, id); err != nil {
			return aibot.Reply{}, err
		}
	}
	return aibot.PassiveStream(id, s.Content, s.Finished, ""), nil
}

// event answers enter_chat with the welcome (a text, or nothing) and
// stores feedback; other events get the empty reply.
func (b *aibotBot) event(ctx context.Context, p *Pipeline, msg aibot.Message) (aibot.Reply, error) {
	if msg.Event == nil {
		return aibot.Reply{}, nil
	}
	switch msg.Event.EventType {
	case aibot.EventEnterChat:
		return aibot.PassiveText(b.replies.Welcome), nil
	case aibot.EventFeedback:
		return aibot.Reply{}, b.feedback(ctx, msg.Event.Feedback)
	}
	return aibot.Reply{}, nil
}

// feedback stores a user's verdict with the answer it is about and counts
// it. Feedback on an answer that is gone (pruned) is dropped.
func (b *aibotBot) feedback(ctx context.Context, f *aibot.Feedback) error {
	if f == nil || f.ID == "" {
		return nil
	}
	_, err := b.store.SetAIBotFeedback(ctx, b.cfg.Name, f.ID, storage.AIBotFeedback{
		Type: f.Type, Note: feedbackNote(f), At: b.clock.Now(),
	})
	if errors.Is(err, storage.ErrNotFound) {
		b.log.Info("feedback on an unknown answer dropped", "bot", b.cfg.Name)
		return nil
	}
	if err != nil {
		return err
	}
	b.metrics.feedback(b.cfg.Name, feedbackType(f.Type))
	return nil
}

// feedbackType names WeCom's feedback types for the metric.
func feedbackType(t int) string {
	switch t {
	case aibot.FeedbackAccurate:
		return "accurate"
	case aibot.FeedbackInaccurate:
		return "inaccurate"
	case aibot.FeedbackCancel:
		return "cancelled"
	}
	return "other"
}

// feedbackNote words the reasons of an inaccurate verdict and the user's
// own words.
func feedbackNote(f *aibot.Feedback) string {
	names := map[int]string{1: "unrelated", 2: "incomplete", 3: "wrong", 4: "data analysis wrong"}
	var reasons []string
	for _, r := range f.InaccurateReasons {
		if n, ok := names[r]; ok {
			reasons = append(reasons, n)
		} else {
			reasons = append(reasons, fmt.Sprintf("reason %d", r))
		}
	}
	note := strings.Join(reasons, ", ")
	if c := strings.TrimSpace(f.Content); c != "" {
		if note != "" {
			note += ": "
		}
		note += c
	}
	return note
}
