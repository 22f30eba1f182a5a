package adapter

// The AI bot channel in long-connection mode (长连接): the service dials
// WeCom (aibot.Conn) instead of being called, so it needs no public URL.
// Messages arrive as frames and go through the same pipeline as callbacks;
// each is answered on the link it came on, with its req_id (the reply is in
// aibot_ws_reply.go).
//
// WeCom keeps one connection per bot and kicks the older one when another
// subscribes, so with several instances on one database exactly one holds a
// bot's connection: the one holding its connection lease, a user lease
// (storage.ClaimUser) under a user id no WeCom user can have. The holder
// renews it every third of PipelineConfig.Lease; the others try to claim it
// as often, so when the holder dies another connects within a lease.
// Instances with a database each (SQLite) keep the lease in Redis instead
// (ConnectionLeases); a lone instance takes none.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/storage"
)

// connectionUser is the user id under which a bot's connection lease is
// kept among the user leases. WeCom user ids are letters, digits and
// "_-@." and group chats are stored as "chat:<chatid>", so no message is
// ever stored under it: the sweeper (UnclaimedUsers) and ReleaseUser, which
// look at users with messages, never touch it.
const connectionUser = "#connection"

// StateStandby is the state of a long connection that another instance
// holds: this instance waits to take it over.
const StateStandby = "standby"

// ConnectionStatus is what the panel shows of an AI bot's long connection
// on this instance. State is one of aibot's states (connected, connecting,
// replaced, error) while this instance holds the connection, or standby
// while another does.
type ConnectionStatus struct {
	State string
	// Since is when State was entered.
	Since time.Time
	// Reconnects counts the dials after the first one, on this instance.
	Reconnects int
	// LastError is the latest failure of the link ("" if none); never a
	// secret.
	LastError string
	// Holder: this instance holds the connection lease (always, on an
	// exclusive database).
	Holder bool
}

// LeaseStore is what the long connection needs of storage for its lease.
type LeaseStore interface {
	ClaimUser(ctx context.Context, u storage.UserRef, owner string, until time.Time) (bool, error)
	DropUserLease(ctx context.Context, u storage.UserRef, owner string) error
}

// ConnectionLeases keeps the connection leases where instances with a
// database each (SQLite) all see them (storage.Redis), with the rules of
// storage.ClaimUser on the caller's clock.
type ConnectionLeases interface {
	ClaimLease(ctx context.Context, key, owner string, now, until time.Time) (bool, error)
	DropLease(ctx context.Context, key, owner string) error
}

var _ ConnectionLeases = (*storage.Redis)(nil)

// sharedLeases are connection leases in ConnectionLeases, as a LeaseStore.
type sharedLeases struct {
	leases ConnectionLeases
	now    func() time.Time
}

// key names the lease: a bot's connection, or another lease kept under a
// reserved user id (a kf account's pulls).
func (s sharedLeases) key(u storage.UserRef) string {
	if u.UserID == connectionUser {
		return "wecombot:connection:" + u.Bot
	}
	return "wecombot:lease:" + u.Bot + ":" + u.UserID
}

func (s sharedLeases) ClaimUser(ctx context.Context, u storage.UserRef, owner string, until time.Time) (bool, error) {
	return s.leases.ClaimLease(ctx, s.key(u), owner, s.now(), until)
}

func (s sharedLeases) DropUserLease(ctx context.Context, u storage.UserRef, owner string) error {
	return s.leases.DropLease(ctx, s.key(u), owner)
}

// wsBot is an AI bot in long-connection mode: its connection while this
// instance holds it, the req_ids of the messages it delivered, and the
// Replier that answers them.
type wsBot struct {
	b        *aibotBot
	url      string
	leases   LeaseStore
	pipeline *Pipeline
	// The lease on the connection (attach): none when exclusive.
	lease     time.Duration
	owner     string
	exclusive bool
	// shared: the leases are in ConnectionLeases, even on an exclusive
	// database.
	shared bool

	wake chan struct{} // a frame was queued
	wg   sync.WaitGroup

	mu    sync.Mutex
	conn  *aibot.Conn // nil while standby
	since time.Time   // of standby
	// reconnects of the connections before conn; counted is how many of
	// all were added to the metric.
	reconnects, counted int
	queue               []wsFrame
	reqs                map[string]wsReq     // by msgid
	events              map[string]time.Time // msgids of the events handled, when
	pruned              time.Time
}

// wsFrame is an inbound frame with the link it came on.
type wsFrame struct {
	in   aibot.Inbound
	link wsLink
}

// wsLink names one subscribed link: a Conn and its dial number. A req_id
// is answered on the link that delivered it.
type wsLink struct {
	conn    *aibot.Conn
	session int
}

// wsReq is the callback that delivered a message, for its reply.
type wsReq struct {
	id   string
	link wsLink
	at   time.Time
}

// reqLifetime is how long WeCom takes replies to a callback: a req_id
// older than that is forgotten.
const reqLifetime = 24 * time.Hour

// newWSBot sets up b on the long connection at url, its lease in db, or
// in shared when set.
func newWSBot(b *aibotBot, url string, db LeaseStore, shared ConnectionLeases) *wsBot {
	if url == "" {
		url = aibot.DefaultURL
	}
	w := &wsBot{b: b, url: url, leases: db, wake: make(chan struct{}, 1),
		reqs: map[string]wsReq{}, events: map[string]time.Time{}, since: b.clock.Now()}
	if shared != nil {
		w.leases, w.shared = sharedLeases{leases: shared, now: b.clock.Now}, true
	}
	return w
}

// attach takes the pipeline the bot's messages go to and its lease
// settings (defaults filled in).
func (w *wsBot) attach(p *Pipeline) {
	w.pipeline, w.lease, w.owner = p, p.cfg.Lease, p.cfg.Owner
	w.exclusive = p.cfg.Exclusive && !w.shared
}

// Run holds the bot's connection while this instance may, until ctx ends,
// and hands the frames it delivers to the pipeline.
func (w *wsBot) Run(ctx context.Context) {
	w.wg.Go(func() { w.work(ctx) })
	defer w.wg.Wait()
	if w.exclusive {
		w.hold(ctx, false)
		return
	}
	ref := w.leaseRef()
	t := w.b.clock.NewTicker(w.leaseEvery())
	defer t.Stop()
	for {
		ok, err := w.leases.ClaimUser(ctx, ref, w.owner, w.b.clock.Now().Add(w.lease))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			w.b.log.Warn("cannot claim the long connection's lease; trying again", "bot", w.b.cfg.Name, "err", err)
		case ok:
			w.hold(ctx, true)
		default:
			w.b.log.Debug("another instance holds the long connection; standing by", "bot", w.b.cfg.Name)
			w.syncMetrics()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

func (w *wsBot) leaseRef() storage.UserRef {
	return storage.UserRef{Bot: w.b.cfg.Name, UserID: connectionUser}
}

func (w *wsBot) leaseEvery() time.Duration { return max(w.lease/3, 10*time.Millisecond) }

// hold runs a connection until ctx ends or, when leased, another instance
// has the lease. A renewal that fails (the database or Redis unreachable)
// keeps the connection: if another instance took the lease meanwhile, its
// subscribe makes WeCom close ours. A connection that another took
// (disconnected_event) is not dialled again, but its lease is kept, so
// that no other instance dials and the two kick each other in turn.
func (w *wsBot) hold(ctx context.Context, leased bool) {
	// The handler names the Conn it belongs to; no frame comes before Run.
	var conn *aibot.Conn
	conn, err := aibot.NewConn(aibot.Options{URL: w.url, BotID: w.b.cfg.BotID, Secret: w.b.cfg.Secret,
		Clock: w.b.clock, Log: w.b.log.With("bot", w.b.cfg.Name), Handler: func(in aibot.Inbound) { w.receive(conn, in) }})
	if err != nil {
		w.b.log.Error("cannot set up the long connection", "bot", w.b.cfg.Name, "err", err)
		return
	}
	w.mu.Lock()
	w.conn = conn
	w.mu.Unlock()
	if leased {
		w.b.log.Info("holding the long connection", "bot", w.b.cfg.Name, "owner", w.owner)
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- conn.Run(runCtx) }()
	defer func() {
		cancel()
		if done != nil {
			<-done
		}
		w.release(conn)
		if leased {
			w.dropLease()
		}
	}()
	t := w.b.clock.NewTicker(w.leaseEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			done = nil
			if errors.Is(err, aibot.ErrReplaced) {
				w.b.log.Warn("the long connection was taken by another program; not reconnecting until restart",
					"bot", w.b.cfg.Name, "hint", "stop the other program or instance that uses this bot_id, then restart")
			}
			w.syncMetrics()
		case <-t.Chan():
			w.syncMetrics()
			if !leased {
				continue
			}
			ok, err := w.leases.ClaimUser(ctx, w.leaseRef(), w.owner, w.b.clock.Now().Add(w.lease))
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				w.b.log.Warn("cannot renew the long connection's lease; keeping the connection", "bot", w.b.cfg.Name, "err", err)
			case !ok:
				w.b.log.Warn("another instance took the long connection's lease; closing the connection", "bot", w.b.cfg.Name)
				leased = false // not ours to drop
				return
			}
		}
	}
}

// release forgets conn, which has stopped: this instance is on standby.
func (w *wsBot) release(conn *aibot.Conn) {
	w.mu.Lock()
	if w.conn == conn {
		w.conn = nil
		w.reconnects += conn.Status().Reconnects
		w.since = w.b.clock.Now()
	}
	w.mu.Unlock()
	w.syncMetrics()
}

// dropLease gives the lease up, so that another instance connects at
// once rather than when it expires.
func (w *wsBot) dropLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.leases.DropUserLease(ctx, w.leaseRef(), w.owner); err != nil {
		w.b.log.Warn("cannot drop the long connection's lease; it expires by itself", "bot", w.b.cfg.Name, "err", err)
	}
}

// current is the connection, or nil while standby.
func (w *wsBot) current() *aibot.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn
}

// status is what the panel shows of the connection.
func (w *wsBot) status() ConnectionStatus {
	w.mu.Lock()
	conn, reconnects, since := w.conn, w.reconnects, w.since
	w.mu.Unlock()
	if conn == nil {
		return ConnectionStatus{State: StateStandby, Since: since, Reconnects: reconnects}
	}
	s := conn.Status()
	return ConnectionStatus{State: string(s.State), Since: s.Since, Reconnects: reconnects + s.Reconnects,
		LastError: s.LastError, Holder: true}
}

// syncMetrics brings the connection's metrics up to its status.
func (w *wsBot) syncMetrics() {
	s := w.status()
	connected := 0.0
	if s.State == string(aibot.StateConnected) {
		connected = 1
	}
	w.b.metrics.connected.WithLabelValues(w.b.cfg.Name).Set(connected)
	w.mu.Lock()
	added := s.Reconnects - w.counted
	w.counted = max(w.counted, s.Reconnects)
	w.mu.Unlock()
	if added > 0 {
		w.b.metrics.reconnects.WithLabelValues(w.b.cfg.Name).Add(float64(added))
	}
}

// receive queues a frame of conn for work. It runs on conn's read loop
// and so must not wait.
func (w *wsBot) receive(conn *aibot.Conn, in aibot.Inbound) {
	f := wsFrame{in: in, link: wsLink{conn: conn, session: conn.Status().Reconnects}}
	w.mu.Lock()
	w.queue = append(w.queue, f)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// work handles the queued frames in order until ctx ends.
func (w *wsBot) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			if len(w.queue) == 0 {
				w.mu.Unlock()
				break
			}
			f := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			w.handle(ctx, f)
		}
	}
}

// handle takes one inbound frame: a message is stored for the pipeline,
// its req_id kept for the reply; enter_chat is welcomed, feedback stored.
func (w *wsBot) handle(ctx context.Context, f wsFrame) {
	log := w.b.log.With("bot", w.b.cfg.Name, "req_id", f.in.ReqID)
	msg, err := aibot.ParseMessage(f.in.Body)
	if err != nil {
		log.Warn("malformed frame body; dropped", "err", err)
		return
	}
	if msg.MsgType == aibot.TypeEvent {
		if w.firstEvent(msg.MsgID) {
			w.event(ctx, log, f, msg)
		}
		return
	}
	if msg.MsgID == "" {
		log.Warn("message without msgid; dropped", "msgtype", msg.MsgType)
		return
	}
	w.remember(msg.MsgID, f)
	// A redelivery (same msgid, new req_id) is dropped here, answered or
	// not: the message is stored once.
	if _, err := w.pipeline.Accept(ctx, inboundOf(w.b.cfg.Name, msg)); err != nil && !errors.Is(err, ErrInFlight) && ctx.Err() == nil {
		log.Error("cannot store AI bot message; it is lost unless WeCom delivers it again", "msgtype", msg.MsgType, "err", err)
	}
}

// event welcomes enter_chat (nothing when replies.welcome is empty) and
// stores feedback; other events need no answer.
func (w *wsBot) event(ctx context.Context, log *slog.Logger, f wsFrame, msg aibot.Message) {
	if msg.Event == nil {
		return
	}
	switch msg.Event.EventType {
	case aibot.EventEnterChat:
		if strings.TrimSpace(w.b.replies.Welcome) == "" {
			return
		}
		// Not on the frame queue: waiting for the ack would hold up the
		// messages behind it.
		w.wg.Go(func() {
			if err := f.link.conn.RespondWelcome(ctx, f.in.ReqID, w.b.replies.Welcome); err != nil && ctx.Err() == nil {
				log.Warn("welcome not delivered", "err", err)
			}
		})
	case aibot.EventFeedback:
		if err := w.b.feedback(ctx, msg.Event.Feedback); err != nil && ctx.Err() == nil {
			log.Error("cannot store feedback", "err", err)
		}
	}
}

// remember keeps the req_id that delivered msgID, for its reply. The first
// req_id of a link stays: a redelivery on the same link changes nothing,
// and one on a later link (after a reconnect) replaces it, since a req_id
// is answered on its own link. A reply already running keeps the req_id
// it started with.
func (w *wsBot) remember(msgID string, f wsFrame) {
	now := w.b.clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.reqs[msgID]; !ok || old.link != f.link {
		w.reqs[msgID] = wsReq{id: f.in.ReqID, link: f.link, at: now}
	}
	w.pruneLocked(now)
}

// firstEvent reports whether the event msgID is new: WeCom delivers
// events again after a reconnect too, and a repeated welcome or feedback
// count would show.
func (w *wsBot) firstEvent(msgID string) bool {
	if msgID == "" {
		return true
	}
	now := w.b.clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, seen := w.events[msgID]; seen {
		return false
	}
	w.events[msgID] = now
	w.pruneLocked(now)
	return true
}

// pruneLocked forgets, once an hour, the req_ids and events older than a
// reply may come. w.mu must be held.
func (w *wsBot) pruneLocked(now time.Time) {
	if now.Sub(w.pruned) < time.Hour {
		return
	}
	w.pruned = now
	for id, r := range w.reqs {
		if now.Sub(r.at) >= reqLifetime {
			delete(w.reqs, id)
		}
	}
	for id, at := range w.events {
		if now.Sub(at) >= reqLifetime {
			delete(w.events, id)
		}
	}
}

// request returns the callback that delivered msgID, if this instance
// knows it and it may still be answered.
func (w *wsBot) request(msgID string) (wsReq, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.reqs[msgID]
	if !ok || w.b.clock.Since(r.at) >= reqLifetime {
		return wsReq{}, false
	}
	return r, true
}

// forget drops the req_id of msgID once its reply is over.
func (w *wsBot) forget(msgID string) {
	w.mu.Lock()
	delete(w.reqs, msgID)
	w.mu.Unlock()
}
