package web

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/adapter/aibot"
	"github.com/wecombot/wecombot/storage"
)

// Stats are the dashboard's numbers (storage.DB).
type Stats interface {
	CountMessages(ctx context.Context, since time.Time) (storage.MessageCounts, error)
	// KFMessagesSince counts a bot's kf messages by account (open_kfid).
	KFMessagesSince(ctx context.Context, bot string, since time.Time) (map[string]int64, error)
	HourlyActivity(ctx context.Context, now time.Time, hours int) ([]storage.HourCount, error)
}

// dashboardHandler shows the bots, their tokens and today's traffic.
type dashboardHandler struct {
	render *renderer
	bots   Bots
	kf     KF
	stats  Stats
	now    func() time.Time
	loc    *time.Location
	log    *slog.Logger
}

// botCard is one bot on the dashboard: a self-built app shows its token;
// an AI bot has none, and shows its long connection in websocket mode.
type botCard struct {
	adapter.BotStatus
	CallbackURL string
	ExpiresIn   int64 // seconds; meaningful when Token.ExpiresAt is set
	// KFAccounts are an app's 微信客服 accounts (KF is set), with today's
	// messages.
	KFAccounts []kfAccount
}

// AIBot: the card is an AI bot's (no token, no refresh).
func (b botCard) AIBot() bool { return isAIBot(b.BotStatus) }

// KindKey and ModeKey name the card's kind and mode in the dictionaries.
func (b botCard) KindKey() string {
	if b.AIBot() {
		return "kind." + adapter.KindAIBot
	}
	return "kind." + adapter.KindApp
}

func (b botCard) ModeKey() string { return "mode." + b.Mode }

// ConnFailing: the long connection needs the admin (an error, or another
// connection took the bot over).
func (b botCard) ConnFailing() bool {
	if b.Connection == nil {
		return false
	}
	s := aibot.State(b.Connection.State)
	return s == aibot.StateError || s == aibot.StateReplaced
}

type dashboardData struct {
	Bots  []botCard
	Today storage.MessageCounts
	Chart chart
}

func (h *dashboardHandler) show(c *gin.Context) {
	ctx := c.Request.Context()
	now := h.now()
	y, m, d := now.In(h.loc).Date()
	midnight := time.Date(y, m, d, 0, 0, 0, 0, h.loc)
	today, err := h.stats.CountMessages(ctx, midnight)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	hours, err := h.stats.HourlyActivity(ctx, now, 24)
	if err != nil {
		h.render.fail(c, err)
		return
	}
	scheme := "http"
	if isTLS(c.Request) {
		scheme = "https"
	}
	data := dashboardData{Today: today, Chart: newChart(hours)}
	for _, b := range h.bots.Bots() {
		card := botCard{
			BotStatus:   b,
			CallbackURL: scheme + "://" + c.Request.Host + callbackPath(b.Name),
			ExpiresIn:   expiresIn(b.Token, now),
			KFAccounts:  kfAccountsOf(ctx, h.kf, b, h.log),
		}
		if b.KF != nil {
			counts, err := h.stats.KFMessagesSince(ctx, b.Name, midnight)
			if err != nil {
				h.render.fail(c, err)
				return
			}
			for i, a := range card.KFAccounts {
				card.KFAccounts[i].Today = counts[a.OpenKfID]
			}
		}
		data.Bots = append(data.Bots, card)
	}
	h.render.page(c, http.StatusOK, "dashboard", data)
}

// refresh forces a new access token for a bot ("Refresh token").
func (h *dashboardHandler) refresh(c *gin.Context) {
	name := c.Param("name")
	if _, err := h.bots.RefreshToken(c.Request.Context(), name); err != nil {
		h.render.fail(c, err)
		return
	}
	redirect(c, "/admin/", "/admin/", "token_refreshed")
}

// chart is the 24-hour activity as an inline SVG: a pair of bars (messages,
// answers) per hour, drawn in a viewBox that scales to any width.
type chart struct {
	Width, Height int
	Top, Bottom   float64 // plot area, in viewBox units
	Left, Right   float64
	Max           int // the value of the top grid line
	Bars          []chartBar
	Ticks         []chartTick
	TotalMessages int
	TotalAnswers  int
}

type chartBar struct {
	Start        time.Time
	Messages     int
	Answers      int
	X, W         float64 // the messages bar; the answers bar is beside it
	AX           float64
	MY, MH       float64
	AY, AH       float64
	SlotX, SlotW float64 // the whole hour, for the tooltip's hit area
}

type chartTick struct {
	X     float64
	Start time.Time
}

func newChart(hours []storage.HourCount) chart {
	c := chart{Width: 720, Height: 206, Top: 14, Bottom: 170, Left: 44, Right: 712}
	for _, h := range hours {
		c.Max = max(c.Max, h.Messages, h.Answers)
		c.TotalMessages += h.Messages
		c.TotalAnswers += h.Answers
	}
	c.Max = niceMax(c.Max)
	if len(hours) == 0 {
		return c
	}
	slot := (c.Right - c.Left) / float64(len(hours))
	bar := slot * 0.38
	scale := (c.Bottom - c.Top) / float64(c.Max)
	for i, h := range hours {
		x := c.Left + float64(i)*slot
		mh, ah := float64(h.Messages)*scale, float64(h.Answers)*scale
		c.Bars = append(c.Bars, chartBar{
			Start: h.Start, Messages: h.Messages, Answers: h.Answers,
			X: round1(x + slot*0.1), W: round1(bar), AX: round1(x + slot*0.1 + bar),
			MY: round1(c.Bottom - mh), MH: round1(mh), AY: round1(c.Bottom - ah), AH: round1(ah),
			SlotX: round1(x), SlotW: round1(slot),
		})
		if i%6 == 0 {
			c.Ticks = append(c.Ticks, chartTick{X: round1(x), Start: h.Start})
		}
	}
	return c
}

// niceMax rounds the largest value up to 1, 2 or 5 times a power of ten
// (at least 4, so that a quiet day does not draw full-height bars).
func niceMax(v int) int {
	v = max(v, 4)
	p := int(math.Pow10(int(math.Floor(math.Log10(float64(v))))))
	for _, m := range []int{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// Mid is the y of the middle grid line.
func (c chart) Mid() float64 { return round1((c.Top + c.Bottom) / 2) }
