package aibot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// errDial marks a Subscribe that never reached WeCom's side of the long
// connection (DNS, refused, TLS, a handshake that is not a WebSocket's).
var errDial = errors.New("aibot: cannot open the long connection")

// Subscribe dials the long connection at url (DefaultURL when empty),
// subscribes botID with secret, waits for the ack and closes: whether
// WeCom accepts the pair, without holding the connection. It is `wecombot
// check -online`'s probe; the service keeps its connection with Conn.
//
// WeCom keeps one connection per bot: a Subscribe while a service holds
// the bot's connection takes it from that service (disconnected_event),
// and the service does not reconnect until it restarts.
//
// A refusal is an *AckError; no ack within the subscribe's 10 s is
// ErrAckTimeout. Hint says what to do about either. The secret goes on the
// wire and into no error.
func Subscribe(ctx context.Context, url, botID, secret string, client *http.Client) error {
	if url == "" {
		url = DefaultURL
	}
	dialCtx, cancelDial := context.WithTimeout(ctx, subscribeTimeout)
	ws, _, err := websocket.Dial(dialCtx, url, &websocket.DialOptions{HTTPClient: client})
	cancelDial()
	if err != nil {
		return fmt.Errorf("%w: %w", errDial, err)
	}
	defer func() { _ = ws.CloseNow() }()
	ws.SetReadLimit(readLimit)

	reqID := NewReqID(CmdSubscribe, time.Now())
	payload, err := command(CmdSubscribe, reqID, SubscribeBody{BotID: botID, Secret: secret})
	if err != nil {
		return fmt.Errorf("aibot: %s: %w", CmdSubscribe, err)
	}
	ackCtx, cancelAck := context.WithTimeout(ctx, subscribeTimeout)
	defer cancelAck()
	if err := ws.Write(ackCtx, websocket.MessageText, payload); err != nil {
		return fmt.Errorf("aibot: %s: write: %w", CmdSubscribe, err)
	}
	for {
		_, data, err := ws.Read(ackCtx)
		switch {
		case err != nil && ctx.Err() == nil && ackCtx.Err() != nil:
			return fmt.Errorf("aibot: %s %s: %w (%v)", CmdSubscribe, reqID, ErrAckTimeout, subscribeTimeout)
		case err != nil:
			return fmt.Errorf("aibot: %s: read: %w", CmdSubscribe, err)
		}
		var f Frame
		if json.Unmarshal(data, &f) != nil || !f.IsAck() || f.Headers.ReqID != reqID {
			continue // not the answer to our subscribe
		}
		if *f.ErrCode != 0 {
			return &AckError{Cmd: CmdSubscribe, ReqID: reqID, Code: *f.ErrCode, Msg: f.ErrMsg}
		}
		_ = ws.Close(websocket.StatusNormalClosure, "subscribe checked")
		return nil
	}
}

// Hint tells an administrator what to do about a failed Subscribe, or ""
// when there is nothing specific to say.
func Hint(err error) string {
	var refused *AckError
	switch {
	case errors.As(err, &refused) && refused.Cmd == CmdSubscribe:
		return "WeCom refused the bot_id or secret: copy the BotID and the long-connection Secret of this AI bot (API mode, long connection) into bots[].bot_id and bots[].secret."
	case errors.Is(err, ErrAckTimeout):
		return "WeCom did not answer the subscribe in time: check the network path to wecom.aibot_ws_url."
	case errors.Is(err, errDial):
		return "The long connection cannot be opened: check wecom.aibot_ws_url, DNS and the outgoing firewall (wss:// on port 443)."
	}
	return ""
}
