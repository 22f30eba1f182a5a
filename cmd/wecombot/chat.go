package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/web"
)

const (
	// chatQuiet ends an answer: the outbox sends the parts of one answer
	// back to back, so a pause this long after a part means it was the last.
	chatQuiet = 500 * time.Millisecond
	// cipherShown is how much of the ciphertext the panel shows.
	cipherShown = 24
)

// demoChat is the panel's "chat as a WeCom user" in demo mode. It plays
// WeCom's side in full, through the same doors as WeCom: an encrypted
// callback to the service, the answer caught at the simulator's
// message/send. The answer is told apart only by its recipient and its
// order, so exchanges run one at a time.
type demoChat struct {
	sim     *wecomsim.Server
	bot     string
	corpID  string
	agentID int64

	turn chan struct{} // held for an exchange

	mu       sync.Mutex
	callback *wecomsim.Callback // set once the service listens
	msgID    int64
}

var _ web.Simulator = (*demoChat)(nil)

func newDemoChat(sim *wecomsim.Server, bot, corpID string, agentID int64) *demoChat {
	return &demoChat{sim: sim, bot: bot, corpID: corpID, agentID: agentID, turn: make(chan struct{}, 1), msgID: time.Now().UnixNano()}
}

// setCallback gives the chat the service's callback, known once it listens.
func (d *demoChat) setCallback(cb *wecomsim.Callback) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.callback = cb
}

// Chat sends text from user to the bot and waits, until ctx ends, for the
// parts of the answer delivered to that user.
func (d *demoChat) Chat(ctx context.Context, bot, user, text string) (web.ChatTrace, error) {
	if bot != d.bot {
		return web.ChatTrace{}, fmt.Errorf("demo chat: bot %s is not on the simulator: %w", bot, adapter.ErrUnknownBot)
	}
	select {
	case d.turn <- struct{}{}:
		defer func() { <-d.turn }()
	case <-ctx.Done():
		return web.ChatTrace{}, fmt.Errorf("demo chat: waiting for the previous exchange: %w", ctx.Err())
	}
	d.mu.Lock()
	if d.callback == nil {
		d.mu.Unlock()
		return web.ChatTrace{}, fmt.Errorf("demo chat: the service is not listening yet")
	}
	d.msgID++
	msgID, cb := d.msgID, *d.callback
	d.mu.Unlock()
	plain := wecomsim.TextXML(d.corpID, user, text, msgID, time.Now().Unix(), d.agentID)
	w := &wire{next: http.DefaultTransport}
	cb.HTTPClient = &http.Client{Transport: w, Timeout: 5 * time.Second} // WeCom's timeout

	seen := len(d.sim.Delivered())
	start := time.Now()
	status, _, err := cb.Post(ctx, plain)
	if err != nil {
		return web.ChatTrace{}, fmt.Errorf("demo chat: %w", err)
	}
	t := web.ChatTrace{
		Path: w.path, CipherLen: len(w.encrypt), CipherPrefix: w.encrypt[:min(len(w.encrypt), cipherShown)], Signature: w.signature,
		Encrypted: w.sent.Sub(start), Status: status, Answered: w.answered.Sub(w.sent),
	}
	end := w.answered // a refused callback gets no answer
	if status == http.StatusOK {
		parts := d.answer(ctx, user, seen)
		end = time.Now()
		for _, p := range parts {
			t.Answer = append(t.Answer, p.Content)
		}
		if len(parts) > 0 {
			// The simulator stamps each part as message/send receives it;
			// the quiet wait after the last one is not the service's time.
			end = parts[len(parts)-1].At
			t.Delivered = end.Sub(w.sent)
		}
	}
	t.Total = end.Sub(start)
	return t, nil
}

// answer collects what is delivered to user after the first seen
// deliveries: it waits for a first part until ctx ends, then for more
// until chatQuiet passes without one.
func (d *demoChat) answer(ctx context.Context, user string, seen int) []wecomsim.Sent {
	var parts []wecomsim.Sent
	for {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if len(parts) > 0 {
			wait, cancel = context.WithTimeout(ctx, chatQuiet)
		}
		sent, err := d.sim.WaitDelivered(wait, seen+1)
		cancel()
		for _, s := range sent[min(seen, len(sent)):] {
			if strings.EqualFold(s.ToUser, user) && s.AgentID == d.agentID {
				parts = append(parts, s)
			}
		}
		seen = len(sent)
		if err != nil {
			return parts
		}
	}
}

// wire is the chat's transport: it notes the callback as it goes out (the
// envelope's <Encrypt>, the signature), when it went and when the service
// answered.
type wire struct {
	next      http.RoundTripper
	sent      time.Time
	answered  time.Time // the answer's headers arrived
	path      string
	encrypt   string
	signature string
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	w.sent = time.Now()
	w.path = r.URL.Path
	w.signature = r.URL.Query().Get("msg_signature")
	if r.GetBody != nil { // a copy: the request itself is sent untouched
		if body, err := r.GetBody(); err == nil {
			var env struct {
				Encrypt string `xml:"Encrypt"`
			}
			b, _ := io.ReadAll(body)
			if xml.Unmarshal(b, &env) == nil {
				w.encrypt = env.Encrypt
			}
		}
	}
	resp, err := w.next.RoundTrip(r)
	w.answered = time.Now()
	return resp, err
}
