package adapter

// The reply of an AI bot in long-connection mode: the answer streams back
// as aibot_respond_msg frames with the req_id of the message's callback,
// one stream id, cumulative content. What the stream cannot carry (over
// 20,480 bytes, after WeCom refused a frame, or a message whose req_id this
// instance does not know: accepted before a restart) goes as markdown
// through aibot_send_msg, as parts of the outbox (Deliver).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/storage"
)

// wsFrameEvery spaces the frames of one reply. WeCom allows a conversation
// 30 replies a minute and does not say whether stream frames count; one
// every 2 s stays under it either way. Deltas in between are coalesced:
// frames carry the whole text so far.
const wsFrameEvery = 2 * time.Second

// Begin starts the reply to m on the req_id that delivered it. Its stream
// row holds the feedback id, so feedback_event finds the answer.
func (w *wsBot) Begin(ctx context.Context, m storage.Message) (Reply, error) {
	id := streamID(m.Bot, m.DedupeKey)
	_, _, err := w.b.store.CreateAIBotStream(ctx, storage.AIBotStream{Bot: m.Bot, StreamID: id, MessageID: m.ID, FeedbackID: id})
	if err != nil {
		return nil, err
	}
	r := &wsReply{w: w, m: m, streamID: id}
	if req, ok := w.request(m.DedupeKey); ok {
		r.req = req
	} else {
		r.closed = true // the whole answer goes by aibot_send_msg
	}
	return r, nil
}

// wsReply is the reply to one message on its stream.
type wsReply struct {
	w        *wsBot
	m        storage.Message
	streamID string
	req      wsReq
	text     strings.Builder // the answer so far
	shown    string          // the content of the last acked frame
	frames   int             // frames sent
	last     time.Time       // when the last frame went
	// closed: the stream takes no more frames (finished, refused, or never
	// open); what it did not show goes by aibot_send_msg.
	closed bool
	// finished: a finish frame was acked.
	finished bool
}

func (r *wsReply) Add(ctx context.Context, delta string) error {
	r.text.WriteString(delta)
	if r.closed || (r.frames > 0 && r.w.b.clock.Since(r.last) < wsFrameEvery) {
		return nil
	}
	head, rest := aibot.Cut(r.text.String(), aibot.MaxStreamBytes)
	if strings.TrimSpace(head) == "" || (head == r.shown && rest == "") {
		return nil
	}
	// A full stream ends here; the rest follows from Finish.
	return r.frame(ctx, head, rest != "")
}

// frame sends one stream frame. A refused frame (846608 expired, 846605,
// no ack, link lost) closes the stream: the rest goes by aibot_send_msg.
func (r *wsReply) frame(ctx context.Context, content string, finish bool) error {
	feedback := ""
	if r.frames == 0 {
		feedback = r.streamID // honoured on the first frame only
	}
	r.frames++
	r.last = r.w.b.clock.Now()
	err := r.req.link.conn.Respond(ctx, r.req.id, aibot.StreamReply(r.streamID, content, finish, feedback))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.closed = true
		r.w.b.log.Warn("stream frame refused; the rest of the answer goes by aibot_send_msg",
			"bot", r.m.Bot, "message", r.m.ID, "err", err)
		return nil
	}
	if r.shown == "" {
		// Something is shown: after a crash the message ends with the
		// interrupted notice rather than starting again.
		if err := r.w.b.store.SetMessageState(ctx, r.m.ID, storage.MessageStreaming, ""); err != nil {
			return err
		}
	}
	r.shown = content
	if finish {
		r.closed, r.finished = true, true
	}
	return nil
}

// pace waits until the next frame may go.
func (r *wsReply) pace(ctx context.Context) error {
	if r.frames == 0 {
		return nil
	}
	wait := wsFrameEvery - r.w.b.clock.Since(r.last)
	if wait <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.w.b.clock.After(wait):
		return nil
	}
}

func (r *wsReply) Shown() bool { return r.shown != "" }

func (r *wsReply) Finish(ctx context.Context, text string, failed bool) ([]string, error) {
	defer r.w.forget(r.m.DedupeKey)
	final := text
	if failed && r.shown != "" {
		final = r.shown + "\n\n" + text // the notice after what was shown
	}
	if !r.closed && strings.HasPrefix(final, r.shown) {
		head, _ := aibot.Cut(final, aibot.MaxStreamBytes)
		if failed && head != final {
			head = r.shown // no room for the notice: it follows
		}
		if strings.TrimSpace(head) != "" {
			if err := r.pace(ctx); err != nil {
				return nil, err
			}
			if err := r.frame(ctx, head, true); err != nil {
				return nil, err
			}
		}
	}
	if failed {
		if r.finished && strings.HasSuffix(r.shown, text) {
			return nil, nil
		}
		return sendParts(text), nil
	}
	if strings.HasPrefix(text, r.shown) {
		return sendParts(text[len(r.shown):]), nil
	}
	return sendParts(text), nil
}

// Interrupted ends a reply cut off by a stop or a crash: the notice goes by
// aibot_send_msg, since what the stream showed before is not known here
// (stream content must only grow).
func (r *wsReply) Interrupted(_ context.Context, notice string) ([]string, error) {
	r.w.forget(r.m.DedupeKey)
	return sendParts(notice), nil
}

// sendParts is text as aibot_send_msg markdown messages, each within
// WeCom's limit.
func sendParts(text string) []string {
	if strings.TrimSpace(text) == "" {
		return nil
	}
	return Split(text, aibot.MaxStreamBytes)
}

// Deliver sends a part as markdown with aibot_send_msg to the chat it
// answers. WeCom refuses a chat that never wrote to the bot: such a
// refusal is final. Without the connection (another instance holds it) the
// part waits for a later attempt.
func (w *wsBot) Deliver(ctx context.Context, part storage.OutboxPart, _ time.Duration) (string, error) {
	conn := w.current()
	if conn == nil {
		return "", fmt.Errorf("adapter: AI bot %s: %w: another instance holds the long connection", w.b.cfg.Name, aibot.ErrNotConnected)
	}
	err := conn.Send(ctx, aibot.MarkdownSend(chatOf(part.UserID), part.Content))
	var refused *aibot.AckError
	if errors.As(err, &refused) {
		return "", permanent(err)
	}
	return "", err
}

// chatOf is the chat to send to for a stored conversation: the chat id of
// a group, the user id of a single chat.
func chatOf(conversation string) string {
	return strings.TrimPrefix(conversation, groupConversation(""))
}
