package adapter

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Metrics are the Prometheus metrics of the WeCom side of the service. The
// names are a contract with dashboards: extend, never rename.
type Metrics struct {
	fetches   *prometheus.CounterVec
	apiErrors *prometheus.CounterVec
	expiry    *prometheus.Desc
	pace      *prometheus.Desc

	mu       sync.Mutex
	managers []*TokenManager
	pacers   []*answerPacer
}

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
		pace: prometheus.NewDesc("wecombot_answers_paced_per_second",
			"Answers a second allowed to start while they are paced because callbacks wait for them (SQLite); 0: not paced.", nil, nil),
	}
	if reg != nil {
		reg.MustRegister(m.fetches, m.apiErrors, m)
	}
	return m
}

func (m *Metrics) watch(tm *TokenManager) {
	m.mu.Lock()
	m.managers = append(m.managers, tm)
	m.mu.Unlock()
}

func (m *Metrics) watchPacer(p *answerPacer) {
	m.mu.Lock()
	m.pacers = append(m.pacers, p)
	m.mu.Unlock()
}

// Describe implements prometheus.Collector for the gauges computed at
// scrape time: the token expiry counts down without anyone updating it.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.expiry; ch <- m.pace }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	managers := append([]*TokenManager(nil), m.managers...)
	pacers := append([]*answerPacer(nil), m.pacers...)
	m.mu.Unlock()
	for _, tm := range managers {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, tm.expiresIn(), tm.bot)
	}
	for _, p := range pacers {
		v := 0.0
		if l := p.limit(); l != rate.Inf {
			v = float64(l)
		}
		ch <- prometheus.MustNewConstMetric(m.pace, prometheus.GaugeValue, v)
	}
}

func (m *Metrics) tokenFetch(bot, result string) { m.fetches.WithLabelValues(bot, result).Inc() }

func (m *Metrics) apiError(bot, api string, err error) {
	if err == nil {
		return
	}
	code := "network"
	var ae *APIError
	var he *HTTPError
	switch {
	case errors.As(err, &ae):
		code = strconv.Itoa(ae.Code)
	case errors.As(err, &he):
		code = "http_" + strconv.Itoa(he.Status)
	case errors.Is(err, ErrNoToken):
		return // counted where gettoken failed
	}
	m.apiErrors.WithLabelValues(bot, api, code).Inc()
}
