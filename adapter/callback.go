package adapter

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// maxCallbackBody is the largest callback body accepted; WeCom's are a few KiB.
const maxCallbackBody = 1 << 20

// Routes mounts the callback endpoints: /wecom/{name}/callback.
func (a *App) Routes(r gin.IRouter) {
	r.GET("/wecom/:name/callback", func(c *gin.Context) {
		if b, ok := a.aibots[c.Param("name")]; ok {
			a.verifyAIBotURL(c, b)
			return
		}
		a.verifyURL(c)
	})
	r.POST("/wecom/:name/callback", func(c *gin.Context) {
		if b, ok := a.aibots[c.Param("name")]; ok {
			a.receiveAIBot(c, b)
			return
		}
		a.receive(c)
	})
}

// refuse answers a 4xx with a short reason and logs it; nothing is processed.
func (a *App) refuse(c *gin.Context, status int, reason string, err error) {
	a.log.Warn("callback refused", "bot", c.Param("name"), "status", status, "reason", reason,
		"err", errString(err), "remote", c.ClientIP())
	c.String(status, reason)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type callbackQuery struct {
	signature, timestamp, nonce string
}

func (a *App) query(c *gin.Context) (callbackQuery, string) {
	q := callbackQuery{c.Query("msg_signature"), c.Query("timestamp"), c.Query("nonce")}
	if q.signature == "" || q.timestamp == "" || q.nonce == "" {
		return q, "missing msg_signature, timestamp or nonce"
	}
	if _, err := strconv.ParseInt(q.timestamp, 10, 64); err != nil {
		return q, "timestamp is not a number"
	}
	return q, ""
}

// verifyURL answers WeCom's URL verification with the decrypted echostr as
// the raw body.
func (a *App) verifyURL(c *gin.Context) {
	b, ok := a.bots[c.Param("name")]
	if !ok {
		a.refuse(c, http.StatusNotFound, "unknown bot", nil)
		return
	}
	q, bad := a.query(c)
	echostr := c.Query("echostr")
	if bad == "" && echostr == "" {
		bad = "missing echostr"
	}
	if bad != "" {
		a.refuse(c, http.StatusBadRequest, bad, nil)
		return
	}
	if err := b.cipher.Verify(q.signature, q.timestamp, q.nonce, echostr); err != nil {
		a.refuse(c, http.StatusForbidden, "bad signature", err)
		return
	}
	plain, err := b.cipher.Decrypt(echostr)
	if err != nil {
		a.refuse(c, statusOf(err), "cannot decrypt echostr", err)
		return
	}
	a.log.Info("callback URL verified", "bot", b.cfg.Name)
	c.Data(http.StatusOK, "text/plain; charset=utf-8", plain)
}

// receive takes one message: verify, decrypt, parse, store (deduplicated),
// answer 200 with an empty body; the answer itself is worked out in the
// background and sent through message/send. WeCom retries anything that is
// not a 200 within 5 s, so a storage failure answers 500 on purpose.
func (a *App) receive(c *gin.Context) {
	b, ok := a.bots[c.Param("name")]
	if !ok {
		a.refuse(c, http.StatusNotFound, "unknown bot", nil)
		return
	}
	q, bad := a.query(c)
	if bad != "" {
		a.refuse(c, http.StatusBadRequest, bad, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxCallbackBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.refuse(c, http.StatusRequestEntityTooLarge, "body too large", nil)
			return
		}
		a.refuse(c, http.StatusBadRequest, "cannot read body", err)
		return
	}
	env, err := wxcrypto.ParseEnvelope(body)
	if err != nil {
		a.refuse(c, http.StatusBadRequest, "malformed envelope", err)
		return
	}
	if err := b.cipher.Verify(q.signature, q.timestamp, q.nonce, env.Encrypt); err != nil {
		a.refuse(c, http.StatusForbidden, "bad signature", err)
		return
	}
	plain, err := b.cipher.Decrypt(env.Encrypt)
	if err != nil {
		a.refuse(c, statusOf(err), "cannot decrypt message", err)
		return
	}
	msg, err := wxcrypto.ParseMessage(plain)
	if err != nil {
		a.refuse(c, http.StatusBadRequest, "malformed message", err)
		return
	}
	if msg.MsgType == "event" && msg.Event == kf.CallbackEvent {
		a.receiveKF(c, b, msg)
		return
	}
	if msg.FromUserName == "" {
		a.refuse(c, http.StatusBadRequest, "message without FromUserName", nil)
		return
	}
	in := Inbound{
		Bot: b.cfg.Name, UserID: msg.FromUserName, MsgType: msg.MsgType, Event: msg.Event,
		Content: msg.Content, CreateTime: msg.CreateTime, DedupeKey: dedupeKey(msg),
	}
	if msg.MsgType == "image" && msg.MediaID != "" {
		in.Images = []MediaRef{{MediaID: msg.MediaID}}
	}
	// The message must be durable before WeCom hears 200, whatever the
	// client does with the connection meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 4*time.Second)
	defer cancel()
	if _, err := a.pipeline.Accept(ctx, in); err != nil {
		a.log.Error("cannot store message; WeCom will retry", "bot", b.cfg.Name, "user", in.UserID, "err", err)
		c.String(http.StatusInternalServerError, "")
		return
	}
	c.Status(http.StatusOK)
}

// receiveKF takes a kf_msg_or_event callback: news for a 微信客服 account.
// It carries no message to store (no MsgId, no FromUserName), so it is
// acknowledged at once and the account is pulled in the background; a
// callback repeated by WeCom only asks for a pull that finds nothing new.
func (a *App) receiveKF(c *gin.Context, b *bot, msg wxcrypto.Message) {
	k, ok := a.kfbots[b.cfg.Name]
	switch {
	case msg.OpenKfID == "":
		a.log.Warn("kf callback without OpenKfId; ignored", "bot", b.cfg.Name)
	case !ok:
		a.log.Warn("kf callback for an app without kf.enabled; ignored", "bot", b.cfg.Name, "open_kfid", msg.OpenKfID)
	default:
		k.announce(msg.OpenKfID, msg.Token)
	}
	c.Status(http.StatusOK)
}

// dedupeKey identifies a message across WeCom's retries: its MsgId, or for
// events (which have none) user, time and event.
func dedupeKey(m wxcrypto.Message) string {
	if m.MsgID != "" {
		return m.MsgID
	}
	return "event:" + m.FromUserName + ":" + strconv.FormatInt(m.CreateTime, 10) + ":" + m.Event + ":" + m.EventKey
}

// statusOf maps decrypt errors: someone else's corp is forbidden, the rest
// is a bad request.
func statusOf(err error) int {
	if errors.Is(err, wxcrypto.ErrReceiveID) {
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}
