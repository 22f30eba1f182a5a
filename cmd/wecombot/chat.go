package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
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

// simChat is the panel's "chat as a WeCom user", for a service whose WeCom
// is the simulator: in-process in demo mode, or a separate `wecombot
// simulate` that wecom.api_base points at (wecom.simulator: true). It
// plays WeCom's side in full, through the same doors as WeCom: an
// encrypted callback to the service, the answer caught at the simulator's
// message/send. The answer is told apart only by its recipient, its app
// and its order, so exchanges run one at a time.
type simChat struct {
	from deliveries
	bots map[string]adapter.BotConfig

	turn chan struct{} // held for an exchange

	mu      sync.Mutex
	service string // the service's base URL, set once it listens
	msgID   int64
}

var _ web.Simulator = (*simChat)(nil)

// deliveries is where the chat reads what the simulator delivered.
type deliveries interface {
	// Count is the number of messages delivered so far.
	Count(ctx context.Context) (int, error)
	// After waits, until ctx ends, for deliveries past the first n and
	// returns them; on ctx's end, with what it has and ctx's error.
	After(ctx context.Context, n int) ([]wecomsim.Sent, error)
}

func newSimChat(from deliveries, bots []adapter.BotConfig) *simChat {
	c := &simChat{from: from, bots: make(map[string]adapter.BotConfig, len(bots)), turn: make(chan struct{}, 1), msgID: time.Now().UnixNano()}
	for _, b := range bots {
		c.bots[b.Name] = b
	}
	return c
}

// setService gives the chat the service's base URL, known once it listens.
func (d *simChat) setService(base string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.service = strings.TrimRight(base, "/")
}

// Chat sends text from user to the bot and waits, until ctx ends, for the
// parts of the answer delivered to that user.
func (d *simChat) Chat(ctx context.Context, bot, user, text string) (web.ChatTrace, error) {
	b, ok := d.bots[bot]
	if !ok {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: bot %s is not on the simulator: %w", bot, adapter.ErrUnknownBot)
	}
	select {
	case d.turn <- struct{}{}:
		defer func() { <-d.turn }()
	case <-ctx.Done():
		return web.ChatTrace{}, fmt.Errorf("simulator chat: waiting for the previous exchange: %w", ctx.Err())
	}
	d.mu.Lock()
	if d.service == "" {
		d.mu.Unlock()
		return web.ChatTrace{}, fmt.Errorf("simulator chat: the service is not listening yet")
	}
	d.msgID++
	msgID, service := d.msgID, d.service
	d.mu.Unlock()
	seen, err := d.from.Count(ctx)
	if err != nil {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: asking the simulator: %w", err)
	}
	plain := wecomsim.TextXML(b.CorpID, user, text, msgID, time.Now().Unix(), b.AgentID)
	w := &wire{next: http.DefaultTransport}
	cb := simCallback(b, service)
	cb.HTTPClient = &http.Client{Transport: w, Timeout: 5 * time.Second} // WeCom's timeout

	start := time.Now()
	status, _, err := cb.Post(ctx, plain)
	if err != nil {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", err)
	}
	t := web.ChatTrace{
		Path: w.path, CipherLen: len(w.encrypt), CipherPrefix: w.encrypt[:min(len(w.encrypt), cipherShown)], Signature: w.signature,
		Encrypted: w.sent.Sub(start), Status: status, Answered: w.answered.Sub(w.sent),
	}
	end := w.answered // a refused callback gets no answer
	if status == http.StatusOK {
		parts := d.answer(ctx, user, b.AgentID, seen)
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

// answer collects what is delivered to user of the app agentID after the
// first seen deliveries: it waits for a first part until ctx ends, then for
// more until chatQuiet passes without one.
func (d *simChat) answer(ctx context.Context, user string, agentID int64, seen int) []wecomsim.Sent {
	var parts []wecomsim.Sent
	for {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if len(parts) > 0 {
			wait, cancel = context.WithTimeout(ctx, chatQuiet)
		}
		sent, err := d.from.After(wait, seen)
		cancel()
		for _, s := range sent {
			if strings.EqualFold(s.ToUser, user) && s.AgentID == agentID {
				parts = append(parts, s)
			}
		}
		seen += len(sent)
		if err != nil {
			return parts
		}
	}
}

// localDeliveries reads an in-process simulator (demo mode).
type localDeliveries struct{ sim *wecomsim.Server }

func (l localDeliveries) Count(context.Context) (int, error) { return l.sim.DeliveredCount(), nil }

func (l localDeliveries) After(ctx context.Context, n int) ([]wecomsim.Sent, error) {
	sent, err := l.sim.WaitDelivered(ctx, n+1)
	return sent[min(n, len(sent)):], err
}

// remoteDeliveries reads a simulator in another process (`wecombot
// simulate`) through its inspection endpoints under base, the api_base.
type remoteDeliveries struct {
	base   string
	client *http.Client
	every  time.Duration // polling interval
}

func newRemoteDeliveries(base string) remoteDeliveries {
	return remoteDeliveries{base: strings.TrimRight(base, "/"), client: &http.Client{Timeout: 5 * time.Second}, every: 100 * time.Millisecond}
}

func (r remoteDeliveries) Count(ctx context.Context) (int, error) {
	var info wecomsim.Info
	if err := r.get(ctx, wecomsim.InfoPath, &info); err != nil {
		return 0, err
	}
	if info.Simulator != wecomsim.Name {
		return 0, fmt.Errorf("%s answers as %q, not as the simulator", r.base, info.Simulator)
	}
	return info.Delivered, nil
}

func (r remoteDeliveries) After(ctx context.Context, n int) ([]wecomsim.Sent, error) {
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	for {
		var list []wecomsim.Delivery
		// A failed poll is tried again: the simulator may be restarting.
		if err := r.get(ctx, wecomsim.DeliveredPath+"?since="+strconv.Itoa(n), &list); err == nil && len(list) > 0 {
			sent := make([]wecomsim.Sent, len(list))
			for i, d := range list {
				sent[i] = wecomsim.Sent{ToUser: d.ToUser, AgentID: d.AgentID, MsgType: d.MsgType, Content: d.Content, MsgID: d.MsgID, At: d.At}
			}
			return sent, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func (r remoteDeliveries) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(v)
}

// serviceURL is the base URL at which this machine reaches a service
// listening on addr (a listener's address, or server.addr for `simulate`
// and `health`): an empty or unspecified host is the loopback.
func serviceURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
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
