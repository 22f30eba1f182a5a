package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/web"
)

// kfReceptionist is the receptionist the chat plays on a 微信客服 account.
const kfReceptionist = "demo-receptionist"

// chatKF plays a WeChat customer of the 微信客服 account req.KF of app b,
// or its receptionist: the simulator stores what they do and calls the
// app's callback URL with kf_msg_or_event, as WeCom does; the service pulls
// it with kf/sync_msg and answers with kf/send_msg (the welcome with
// kf/send_msg_on_event), where the chat reads the answer.
func (d *simChat) chatKF(ctx context.Context, b adapter.BotConfig, req web.ChatRequest, update func(web.ChatTrace)) (web.ChatTrace, error) {
	sim := d.from.KF()
	if sim == nil {
		return web.ChatTrace{}, fmt.Errorf("simulator chat: 微信客服 needs the simulator in this process: %w", web.ErrChatUnsupported)
	}
	service, release, err := d.takeTurn(ctx)
	if err != nil {
		return web.ChatTrace{}, err
	}
	defer release()
	// This exchange's callback goes out through w; the next exchange sets
	// its own.
	w := &wire{next: http.DefaultTransport}
	cb := simCallback(b, service)
	cb.HTTPClient = &http.Client{Transport: w, Timeout: 5 * time.Second} // WeCom's timeout
	sim.SetKFCallback(b.AgentID, cb)

	seen, pulls := len(sim.KFReceived(req.KF, req.User)), sim.KFSyncCalls(req.KF)
	human := sim.KFState(req.KF, req.User) == wecomsim.KFStateHuman
	start := time.Now()
	code := ""
	switch {
	case req.Welcome:
		code, err = sim.KFCustomerEnters(ctx, req.KF, req.User, "wecombot-demo", "")
	case req.KFAction == web.ChatKFTakeOver:
		_, err = sim.KFHandOver(ctx, req.KF, req.User, kfReceptionist)
	case req.KFAction == web.ChatKFEnd:
		_, err = sim.KFEndSession(ctx, req.KF, req.User)
	case req.Image != nil: // a customer's image carries no text
		_, err = sim.KFCustomerSendsImage(ctx, req.KF, req.User, req.Image)
	default:
		_, err = sim.KFCustomerWrites(ctx, req.KF, req.User, req.Text)
	}
	first := w.first()
	if first.path == "" { // nothing stored (an unknown account), or the callback not sent
		if err == nil {
			err = errors.New("no kf_msg_or_event callback went out")
		}
		return web.ChatTrace{}, fmt.Errorf("simulator chat: %w", err)
	}
	// A callback the service refused is a trace, as for an app.
	t := first.trace(start)
	t.KF, t.Status = true, first.status
	t.NoCode = req.Welcome && code == ""
	t.Human = human && !req.Welcome && req.KFAction == ""
	end := first.answered
	if t.Status == http.StatusOK && !t.NoCode {
		update(t)
		end = followKF(ctx, sim, req, kfSeen{pulls: pulls, received: seen, sent: first.sent, human: t.Human}, &t, update)
	}
	t.Total = end.Sub(start)
	return t, nil
}

// kfSeen is where a kf exchange started at the simulator: the account's
// kf/sync_msg calls and the customer's received messages before it, when
// its callback went out, and whether a person had the customer.
type kfSeen struct {
	pulls, received int
	sent            time.Time
	human           bool
}

// followKF fills t with the service's side of a kf exchange, as the
// simulator sees it, calling update as it grows, and returns when it
// ended: a text's answer followed by chatQuiet without more parts (for a
// customer a person handles, the pull followed by chatQuiet), the
// welcome, the receptionist's event pulled, or ctx's end (for the
// welcome, the welcome_code's life).
func followKF(ctx context.Context, sim *wecomsim.Server, req web.ChatRequest, from kfSeen, t *web.ChatTrace, update func(web.ChatTrace)) time.Time {
	if req.Welcome {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wecomsim.KFWelcomeLifetime)
		defer cancel()
	}
	state := func() (int, []wecomsim.KFSent) {
		return sim.KFSyncCalls(req.KF) - from.pulls, sim.KFReceived(req.KF, req.User)[from.received:]
	}
	end, quietUntil := time.Now(), time.Time{}
	for {
		pulls, got := state()
		changed := pulls != t.Pulls || len(got) != len(t.Answer)
		if changed {
			t.Pulls, t.Answer, end = pulls, nil, time.Now()
			for _, m := range got {
				t.Answer = append(t.Answer, m.Content)
				t.Delivered, end = m.At.Sub(from.sent), m.At
			}
			update(*t)
		}
		switch {
		case req.Welcome && len(got) > 0, req.KFAction != "" && pulls > 0:
			return end
		case changed && (len(got) > 0 || (from.human && pulls > 0)):
			// More parts may follow (or, for a person's customer, none
			// will): the exchange ends after a quiet while.
			quietUntil = time.Now().Add(chatQuiet)
		}
		wait, cancel := ctx, context.CancelFunc(func() {})
		if !quietUntil.IsZero() {
			wait, cancel = context.WithDeadline(ctx, quietUntil)
		}
		err := sim.KFWait(wait, func() bool { p, g := state(); return p != pulls || len(g) != len(got) })
		cancel()
		if err != nil {
			return end
		}
	}
}
