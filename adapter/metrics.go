package adapter

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of the WeCom side of the service. The
// names are a contract with dashboards: extend, never rename.
type Metrics struct {
	fetches   *prometheus.CounterVec
	apiErrors *prometheus.CounterVec
	expiry    *prometheus.Desc

	mu       sync.Mutex
	managers []*TokenManager
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

// Describe implements prometheus.Collector for the expiry gauge, computed at
// scrape time so it counts down without anyone updating it.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.expiry }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	managers := append([]*TokenManager(nil), m.managers...)
	m.mu.Unlock()
	for _, tm := range managers {
		ch <- prometheus.MustNewConstMetric(m.expiry, prometheus.GaugeValue, tm.expiresIn(), tm.bot)
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
