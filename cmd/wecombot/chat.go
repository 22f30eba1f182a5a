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
// encrypted callback to the service, an app's answer caught at the
// simulator's message/send, an AI bot's as WeCom polls its stream, a
// 微信客服 customer's at kf/send_msg once the service pulled the message
// (in-process simulator only). An app's answer is told apart only by its
// recipient, its app and its order, so app and kf exchanges run one at a
// time; an AI bot's comes back on its own callbacks.
type simChat struct {
	from deliveries
	bots map[string]adapter.BotConfig

	turn chan struct{} // held for an app exchange

	mu      sync.Mutex
	service string // the service's base URL, set once it listens
	msgID   int64
}

var _ web.Simulator = (*simChat)(nil)

// deliveries is the simulator behind the chat.
type deliveries interface {
	// Count is the number of messages delivered so far.
	Count(ctx context.Context) (int, error)
	// After waits, until ctx ends, for deliveries past the first n and
	// returns them; on ctx's end, with what it has and ctx's error.
	After(ctx context.Context, n int) ([]wecomsim.Sent, error)
	// FailSends makes the next n message/send calls fail.
	FailSends(ctx context.Context, n int) error
	// ResponseURLs is the simulator that issues AI bots' response_urls
	// and where it is served; nil when the chat cannot issue them.
	ResponseURLs() (*wecomsim.Server, string)
	// KF is the simulator whose 微信客服 customers the chat plays; nil
	// when it runs in another process.
	KF() *wecomsim.Server
	// PutMedia stores data for media/get under mediaID (an app user's
	// image); web.ErrChatUnsupported when the simulator cannot.
	PutMedia(ctx context.Context, mediaID string, data []byte) error
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

// serviceBase is the service's base URL, once it listens.
func (d *simChat) serviceBase() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.service == "" {
		return "", fmt.Errorf("simulator chat: the service is not listening yet")
	}
	return d.service, nil
}

// FailSends makes the simulator's next n message/send calls fail.
func (d *simChat) FailSends(ctx context.Context, n int) error {
	if err := d.from.FailSends(ctx, n); err != nil {
		return fmt.Errorf("simulator chat: %w", err)
	}
	return nil
}

// Chat plays req on the bot and waits, until ctx ends, for the answer,
// calling update as it grows.
func (d *simChat) Chat(ctx context.Context, req web.ChatRequest, update func(web.ChatTrace)) (web.ChatTrace, error) {
	b, ok := d.bots[req.Bot]
	if !ok {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: bot %s is not on the simulator: %w", req.Bot, adapter.ErrUnknownBot)
	}
	if update == nil {
		update = func(web.ChatTrace) {}
	}
	chat := d.chatApp
	switch {
	case b.Kind == adapter.KindAIBot:
		chat = d.chatAIBot
	case req.KF != "":
		chat = d.chatKF
	}
	t, err := chat(ctx, b, req, update)
	t.Done = err == nil
	return t, err
}

// takeTurn waits, until ctx ends, for the app or kf exchange under way to
// end, and returns the service's base URL; release ends this exchange's
// turn.
func (d *simChat) takeTurn(ctx context.Context) (service string, release func(), err error) {
	select {
	case d.turn <- struct{}{}:
	case <-ctx.Done():
		return "", nil, fmt.Errorf("simulator chat: waiting for the previous exchange: %w", ctx.Err())
	}
	release = func() { <-d.turn }
	if service, err = d.serviceBase(); err != nil {
		release()
		return "", nil, err
	}
	return service, release, nil
}

// chatApp sends a text (or enter_agent) to an app and collects the parts
// of the answer delivered to that user at message/send.
func (d *simChat) chatApp(ctx context.Context, b adapter.BotConfig, req web.ChatRequest, update func(web.ChatTrace)) (web.ChatTrace, error) {
	service, release, err := d.takeTurn(ctx)
	if err != nil {
		return web.ChatTrace{}, err
	}
	defer release()
	d.mu.Lock()
	d.msgID++
	msgID := d.msgID
	d.mu.Unlock()
	seen, err := d.from.Count(ctx)
	if err != nil {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: asking the simulator: %w", err)
	}
	plain := wecomsim.TextXML(b.CorpID, req.User, req.Text, msgID, time.Now().Unix(), b.AgentID)
	switch {
	case req.Welcome:
		plain = wecomsim.EventXML(b.CorpID, req.User, "enter_agent", time.Now().Unix(), b.AgentID)
	case req.Image != nil:
		// An app's image carries no text; MediaXML names its media_id
		// after the msgid.
		if err := d.from.PutMedia(ctx, "media_image_"+strconv.FormatInt(msgID, 10), req.Image); err != nil {
			return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", err)
		}
		plain = wecomsim.MediaXML(b.CorpID, req.User, "image", msgID, time.Now().Unix(), b.AgentID)
	}
	w := &wire{next: http.DefaultTransport}
	cb := simCallback(b, service)
	cb.HTTPClient = &http.Client{Transport: w, Timeout: 5 * time.Second} // WeCom's timeout

	start := time.Now()
	status, _, err := cb.Post(ctx, plain)
	if err != nil {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", err)
	}
	first := w.first()
	t := first.trace(start)
	t.Status = status
	end := first.answered // a refused callback gets no answer
	if status == http.StatusOK {
		update(t)
		parts := d.answer(ctx, req.User, b.AgentID, seen, func(parts []wecomsim.Sent) {
			t.Answer = append(t.Answer, parts[len(parts)-1].Content)
			t.Delivered = parts[len(parts)-1].At.Sub(first.sent)
			update(t)
		})
		end = time.Now()
		if len(parts) > 0 {
			// The simulator stamps each part as message/send receives it;
			// the quiet wait after the last one is not the service's time.
			end = parts[len(parts)-1].At
		}
	}
	t.Total = end.Sub(start)
	return t, nil
}

// answer collects what is delivered to user of the app agentID after the
// first seen deliveries, calling got with the parts so far after each: it
// waits for a first part until ctx ends, then for more until chatQuiet
// passes without one.
func (d *simChat) answer(ctx context.Context, user string, agentID int64, seen int, got func([]wecomsim.Sent)) []wecomsim.Sent {
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
				got(parts)
			}
		}
		seen += len(sent)
		if err != nil {
			return parts
		}
	}
}

// chatAIBot posts a message (or enter_chat) to an AI bot in callback mode
// and follows WeCom's polling of the stream, then what the service posts
// to the message's response_url.
func (d *simChat) chatAIBot(ctx context.Context, b adapter.BotConfig, req web.ChatRequest, update func(web.ChatTrace)) (web.ChatTrace, error) {
	service, err := d.serviceBase()
	if err != nil {
		return web.ChatTrace{}, err
	}
	w := &wire{next: http.DefaultTransport}
	sim, simURL := d.from.ResponseURLs()
	cb := simAIBotCallback(b, service, sim, simURL)
	cb.HTTPClient = &http.Client{Transport: w, Timeout: 5 * time.Second}
	var msg wecomsim.AIBotBody
	switch {
	case req.Welcome:
		msg = wecomsim.AIBotEnterChat(b.BotID, req.User, time.Now())
	case req.Image != nil:
		if sim == nil {
			return web.ChatTrace{}, fmt.Errorf("simulator chat: an AI bot's image: %w", web.ErrChatUnsupported)
		}
		u, err := sim.IssueAIBotMedia(simURL, b.EncodingAESKey, req.Image)
		if err != nil {
			return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", err)
		}
		var items []wecomsim.AIBotItem
		switch {
		case req.Group != "":
			items = append(items, wecomsim.MixedText("@"+b.Name+" "+req.Text))
		case req.Text != "":
			items = append(items, wecomsim.MixedText(req.Text))
		}
		msg = wecomsim.AIBotImage(b.BotID, req.User, u)
		if len(items) > 0 {
			msg = wecomsim.AIBotMixedMessage(b.BotID, req.Group, req.User, append(items, wecomsim.MixedImage(u))...)
		}
	case req.Group != "":
		msg = wecomsim.AIBotGroupText(b.BotID, req.Group, req.User, b.Name, req.Text)
	default:
		msg = wecomsim.AIBotText(b.BotID, req.User, req.Text)
	}
	start := time.Now()
	ex := cb.Start(ctx, msg)
	for over := false; !over; {
		changed := ex.Changed()
		select {
		case <-ex.Done():
			over = true
		case <-changed:
			if t := aiBotTrace(ex, w, sim, start); t.Path != "" {
				update(t)
			}
		}
	}
	t := aiBotTrace(ex, w, sim, start)
	if t.Path == "" {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", ex.Err())
	}
	if last, _ := ex.Last(); sim != nil && ex.ResponseURL != "" && last.Finish {
		// The rest of a long answer goes to response_url once the stream
		// ends; it is not told apart from "nothing more", so wait a little.
		update(t)
		awaitResponseURL(ctx, sim, ex.MsgID)
		t = aiBotTrace(ex, w, sim, start)
	}
	t.Total = time.Since(start)
	return t, nil
}

// awaitResponseURL waits up to chatQuiet for what the service posts to the
// response_url of AI bot message msgID.
func awaitResponseURL(ctx context.Context, sim *wecomsim.Server, msgID string) {
	quiet, cancel := context.WithTimeout(ctx, chatQuiet)
	defer cancel()
	_ = sim.AIBotWait(quiet, func() bool { return len(sim.AIBotResponses(msgID)) > 0 })
}

// aiBotTrace is an AI bot exchange so far; its Path is empty until the
// service answered the message.
func aiBotTrace(ex *wecomsim.AIBotExchange, w *wire, sim *wecomsim.Server, start time.Time) web.ChatTrace {
	first := w.first()
	t := first.trace(start)
	t.AIBot = true
	last := first.answered
	replies := ex.Replies()
	for _, r := range replies {
		switch {
		case r.MsgType == "stream":
			t.Stream, t.Finished, last = r.Content, r.Finish, r.At
			if r.Refresh {
				t.Refreshes++
			}
		case r.MsgType == "text" && !r.Refresh:
			t.Answer, last = append(t.Answer, r.Content), r.At
		}
	}
	if sim != nil {
		for _, r := range sim.AIBotResponses(ex.MsgID) {
			if r.ErrCode == 0 {
				t.Later, last = append(t.Later, r.Content), r.At
			}
		}
	}
	t.Delivered = last.Sub(first.sent)
	return t
}

// localDeliveries reads an in-process simulator (demo mode) served at url.
type localDeliveries struct {
	sim *wecomsim.Server
	url string
}

func (l localDeliveries) Count(context.Context) (int, error) { return l.sim.DeliveredCount(), nil }

func (l localDeliveries) After(ctx context.Context, n int) ([]wecomsim.Sent, error) {
	sent, err := l.sim.WaitDelivered(ctx, n+1)
	return sent[min(n, len(sent)):], err
}

// FailSends answers the next n message/send and n kf/send_msg calls with
// errcode -1 (system busy), which the outbox retries.
func (l localDeliveries) FailSends(_ context.Context, n int) error {
	for _, api := range []string{wecomsim.APISend, wecomsim.APIKFSendMsg} {
		l.sim.FailNext(api, -1, "system busy (injected from the chat page)", n)
	}
	return nil
}

func (l localDeliveries) ResponseURLs() (*wecomsim.Server, string) { return l.sim, l.url }

func (l localDeliveries) KF() *wecomsim.Server { return l.sim }

func (l localDeliveries) PutMedia(_ context.Context, mediaID string, data []byte) error {
	l.sim.PutMedia(mediaID, data)
	return nil
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

// FailSends is not offered: the simulator's endpoints are read-only.
func (r remoteDeliveries) FailSends(context.Context, int) error { return web.ErrChatUnsupported }

// ResponseURLs: a simulator in another process cannot be asked to issue
// them, so AI bot messages from the chat carry none.
func (r remoteDeliveries) ResponseURLs() (*wecomsim.Server, string) { return nil, "" }

// KF: a simulator in another process has no door for its customers.
func (r remoteDeliveries) KF() *wecomsim.Server { return nil }

// PutMedia is not offered: the simulator's endpoints are read-only.
func (r remoteDeliveries) PutMedia(context.Context, string, []byte) error {
	return web.ErrChatUnsupported
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

// wire is the chat's transport: it notes the first request as it goes out
// (the envelope's ciphertext, the signature), when it went and when the
// service answered; later ones (an AI bot's refreshes) pass through.
type wire struct {
	next http.RoundTripper

	mu    sync.Mutex
	taken bool
	seen  wireRecord
}

// wireRecord is the callback that opened an exchange.
type wireRecord struct {
	sent      time.Time
	answered  time.Time // the answer's headers arrived
	status    int
	path      string
	encrypt   string
	signature string
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	w.mu.Lock()
	first := !w.taken
	w.taken = true
	w.mu.Unlock()
	if !first {
		return w.next.RoundTrip(r)
	}
	rec := wireRecord{sent: time.Now(), path: r.URL.Path, signature: r.URL.Query().Get("msg_signature")}
	if r.GetBody != nil { // a copy: the request itself is sent untouched
		if body, err := r.GetBody(); err == nil {
			b, _ := io.ReadAll(body)
			rec.encrypt = envelopeCipher(b)
		}
	}
	resp, err := w.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	rec.answered, rec.status = time.Now(), resp.StatusCode
	w.mu.Lock()
	w.seen = rec
	w.mu.Unlock()
	return resp, err
}

// first is the first request's record, once its answer came; its path is
// empty before.
func (w *wire) first() wireRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// trace starts a ChatTrace from the callback, for an exchange begun at start.
func (r wireRecord) trace(start time.Time) web.ChatTrace {
	return web.ChatTrace{Path: r.path, CipherLen: len(r.encrypt), CipherPrefix: r.encrypt[:min(len(r.encrypt), cipherShown)],
		Signature: r.signature, Encrypted: r.sent.Sub(start), Status: r.status, Answered: r.answered.Sub(r.sent)}
}

// envelopeCipher is the ciphertext of a callback body: an app's XML
// <Encrypt>, an AI bot's JSON "encrypt".
func envelopeCipher(b []byte) string {
	var x struct {
		Encrypt string `xml:"Encrypt"`
	}
	if xml.Unmarshal(b, &x) == nil && x.Encrypt != "" {
		return x.Encrypt
	}
	var j struct {
		Encrypt string `json:"encrypt"`
	}
	_ = json.Unmarshal(b, &j)
	return j.Encrypt
}
