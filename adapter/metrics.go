package adapter

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wecombot/wecombot/llm"
)

// Metrics are the Prometheus metrics of the WeCom side of the service. The
// names are a contract with dashboards: extend, never rename.
type Metrics struct {
	fetches   *prometheus.CounterVec
	apiErrors *prometheus.CounterVec
	expiry    *prometheus.Desc
	requests  *prometheus.CounterVec
	inFlight  *prometheus.Desc
	callLimit *prometheus.Desc
	messages  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	first     *prometheus.HistogramVec
	pending   *prometheus.Desc
	flood     *prometheus.Desc
	// AI bots
	feedbacks  *prometheus.CounterVec
	connected  *prometheus.GaugeVec
	reconnects *prometheus.CounterVec
	// 微信客服
	kfPulls    *prometheus.CounterVec
	kfMessages *prometheus.CounterVec

	mu       sync.Mutex
	managers []*TokenManager
	limiters []watchedLimiters
	outboxes []PendingCounter
	floods   []*floodGuard
}

// PendingCounter counts the reply parts waiting to be sent (storage.DB):
// counted in the database at scrape time, so the gauge is right across
// restarts and instances.
type PendingCounter interface {
	CountPendingParts(ctx context.Context) (int64, error)
}

// Results of wecombot_messages_total.
const (
	resultReceived = "received"
	resultAnswered = "answered"
	resultFailed   = "failed"
	resultIgnored  = "ignored"
)

// scrapeTimeout bounds the database count behind wecombot_outbox_pending.
const scrapeTimeout = 2 * time.Second

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests that do not look at them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_token_fetch_total",
			Help: "gettoken calls by bot and result (ok, api_error, config_error, network_error).",
		}, []string{"bot", "result"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_wecom_api_errors_total",
			Help: "WeCom API calls that failed, by bot, API and errcode (http_NNN or network for transport failures).",
		}, []string{"bot", "api", "errcode"}),
		expiry: prometheus.NewDesc("wecombot_token_expires_in_seconds",
			"Seconds until the bot's current access token expires (0: none).", []string{"bot"}, nil),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_llm_requests_total",
			Help: "Calls to the model by bot and result (ok, rate_limited, error, timeout, config_error).",
		}, []string{"bot", "result"}),
		inFlight: prometheus.NewDesc("wecombot_llm_in_flight",
			"Calls to the model in flight, by model and base_url host.", []string{"model", "host"}, nil),
		callLimit: prometheus.NewDesc("wecombot_llm_concurrency_limit",
			"Calls to the model allowed in flight, by model and base_url host: llm.max_concurrency, lower while the provider rate-limits.",
			[]string{"model", "host"}, nil),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_messages_total",
			Help: "Messages by bot and result: received (stored new), answered (an answer or a reply of the bot's own stored for sending), " +
				"failed (the model or the stream failed: a notice, or nothing, stored instead), ignored (nothing to say: an event other than a welcome). " +
				"Delivery failures are wecombot_wecom_api_errors_total.",
		}, []string{"bot", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wecombot_llm_request_duration_seconds",
			Help:    "How long each call to the model took, failed calls and retries included, by bot.",
			Buckets: llmBuckets,
		}, []string{"bot"}),
		first: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wecombot_llm_first_token_seconds",
			Help: "Time from the start of a streamed call (llm.stream) to its first text, by bot. " +
				"Calls that are not streamed, and streams that fail before any text, observe nothing.",
			Buckets: llmBuckets,
		}, []string{"bot"}),
		pending: prometheus.NewDesc("wecombot_outbox_pending",
			"Reply parts waiting to be sent, counted in the database.", nil, nil),
		flood: prometheus.NewDesc("wecombot_flood",
			"1 while a flood of messages lasts and answers are paced, else 0.", nil, nil),
		feedbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_feedback_total",
			Help: "Users' feedback on AI bot answers by bot and type (accurate, inaccurate, cancelled).",
		}, []string{"bot", "type"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wecombot_aibot_connected",
			Help: "1 while this instance holds the AI bot's long connection, subscribed; else 0.",
		}, []string{"bot"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_aibot_reconnects_total",
			Help: "Times the AI bot's long connection was dialled again after it was lost.",
		}, []string{"bot"}),
		kfPulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_kf_pulls_total",
			Help: "Pulls of 微信客服 accounts (kf/sync_msg until has_more is 0) by bot and result (ok, error).",
		}, []string{"bot", "result"}),
		kfMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecombot_kf_messages_total",
			Help: "New 微信客服 messages stored, by bot and origin (customer, event, receptionist, other).",
		}, []string{"bot", "origin"}),
	}
	if reg != nil {
		reg.MustRegister(m.fetches, m.apiErrors, m.requests, m.messages, m.duration, m.first, m.feedbacks, m.connected, m.reconnects,
			m.kfPulls, m.kfMessages, m)
	}
	return m
}

func (m *Metrics) watch(tm *TokenManager) {
	m.mu.Lock()
	m.managers = append(m.managers, tm)
	m.mu.Unlock()
}

// llmBuckets span a model's answers: a first token within a second, a
// long answer in a minute or two.
var llmBuckets = []float64{0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120}

// watchOutbox counts the pending parts of c at every scrape.
func (m *Metrics) watchOutbox(c PendingCounter) {
	m.mu.Lock()
	m.outboxes = append(m.outboxes, c)
	m.mu.Unlock()
}

// watchFlood reports whether f's flood lasts at every scrape.
func (m *Metrics) watchFlood(f *floodGuard) {
	m.mu.Lock()
	m.floods = append(m.floods, f)
	m.mu.Unlock()
}

// watchedLimiters are the limiters of the model endpoints of one model and
// host (another key or timeout), with the labels of their gauges: a series
// is one pair of labels, and adds up its endpoints.
type watchedLimiters struct {
	model, host string
	ls          []*callLimiter
}

// watchLimiter reports the calls in flight of the endpoint of model at
// host and their limit at every scrape.
func (m *Metrics) watchLimiter(l *callLimiter, model, host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.limiters {
		if w := &m.limiters[i]; w.model == model && w.host == host {
			w.ls = append(w.ls, l)
			return
		}
	}
	m.limiters = append(m.limiters, watchedLimiters{model: model, host: host, ls: []*callLimiter{l}})
}

// Describe implements prometheus.Collector for the gauges computed at
// scrape time: the token expiry counts down without anyone updating it.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.expiry
	ch <- m.inFlight
	ch <- m.callLimit
	ch <- m.pending
	ch <- m.flood
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	managers := append([]*TokenManager(nil), m.managers...)
	limiters := append([]watchedLimiters(nil), m.limiters...)
	outboxes := append([]PendingCounter(nil), m.outboxes...)
	floods := append([]*floodGuard(nil), m.floods...)
	m.mu.Unlock()
	for _, f := range floods {
		v := 0.0
		if f.active() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.flood, prometheus.GaugeValue, v)
	}
	for _, tm := range managers {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, tm.expiresIn(), tm.bot)
	}
	for _, w := range limiters {
		var inFlight, limit int
		for _, l := range w.ls {
			f, n := l.stats()
			inFlight, limit = inFlight+f, limit+n
		}
		ch <- prometheus.MustNewConstMetric(m.inFlight, prometheus.GaugeValue, float64(inFlight), w.model, w.host)
		ch <- prometheus.MustNewConstMetric(m.callLimit, prometheus.GaugeValue, float64(limit), w.model, w.host)
	}
	for _, c := range outboxes {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		n, err := c.CountPendingParts(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(m.pending, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(n))
	}
}

// llmRequest counts a call to the model that ended with err after took.
func (m *Metrics) llmRequest(bot string, err error, took time.Duration) {
	result := "ok"
	if err != nil {
		result = llm.KindOf(err).String()
	}
	m.requests.WithLabelValues(bot, result).Inc()
	m.duration.WithLabelValues(bot).Observe(took.Seconds())
}

// firstToken observes how long a streamed call took to its first text.
func (m *Metrics) firstToken(bot string, took time.Duration) {
	m.first.WithLabelValues(bot).Observe(took.Seconds())
}

// message counts a message of bot with result (resultReceived…).
func (m *Metrics) message(bot, result string) { m.messages.WithLabelValues(bot, result).Inc() }

func (m *Metrics) tokenFetch(bot, result string) { m.fetches.WithLabelValues(bot, result).Inc() }

func (m *Metrics) apiError(bot, api string, err error) {
	if err == nil {
		return
	}
	code := "network"
	var ae *APIError
	var ce errCoder
	var he *HTTPError
	switch {
	case errors.As(err, &ae):
		code = strconv.Itoa(ae.Code)
	case errors.As(err, &ce):
		code = strconv.Itoa(ce.ErrCode())
	case errors.As(err, &he):
		code = "http_" + strconv.Itoa(he.Status)
	case errors.Is(err, ErrNoToken):
		return // counted where gettoken failed
	}
	m.apiErrors.WithLabelValues(bot, api, code).Inc()
}

// kfPull counts a pull of a kf account of bot that ended with err.
func (m *Metrics) kfPull(bot string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.kfPulls.WithLabelValues(bot, result).Inc()
}

// kfMessage counts a new kf message of bot by its origin.
func (m *Metrics) kfMessage(bot, origin string) { m.kfMessages.WithLabelValues(bot, origin).Inc() }

func (m *Metrics) feedback(bot, kind string) { m.feedbacks.WithLabelValues(bot, kind).Inc() }
