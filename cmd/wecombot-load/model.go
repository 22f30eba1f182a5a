package main

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/wecombot/wecombot/llm/llmtest"
)

// loadModel is the fake model of a run. It answers "re: <message>"
// in -llm-latency, streamed over that time when the service streams, and
// with -llm-rate refuses the calls beyond that rate as a provider's rate
// limit does: 429, OpenAI's error body, Retry-After.
type loadModel struct {
	*llmtest.Server
	o        loadOptions
	limit    *rate.Limiter // nil: unlimited
	limited  atomic.Int64  // calls answered 429
	streamed atomic.Bool   // the service asked for a streamed answer
}

func newLoadModel(o loadOptions) *loadModel {
	m := &loadModel{o: o}
	if o.LLMRate > 0 {
		// A bucket of one second's calls: the rate holds over any second,
		// and a backlog's first second is not refused call by call.
		m.limit = rate.NewLimiter(rate.Limit(o.LLMRate), max(1, int(math.Ceil(o.LLMRate))))
	}
	m.Server = llmtest.New(m.respond)
	return m
}

func (m *loadModel) respond(req llmtest.Request) llmtest.Reply {
	if req.Stream {
		m.streamed.Store(true)
	}
	if m.limit != nil && !m.limit.Allow() {
		m.limited.Add(1)
		after := int(math.Ceil(m.o.LLMRetryAfter.Seconds()))
		return llmtest.Reply{
			Status:  http.StatusTooManyRequests,
			Content: fmt.Sprintf("Rate limit reached for requests per second: Limit %g. Please try again in %ds.", m.o.LLMRate, after),
			Header:  http.Header{"Retry-After": {strconv.Itoa(after)}},
		}
	}
	last := ""
	for _, msg := range req.Messages {
		if msg.Role == "user" {
			last = msg.Content
		}
	}
	return llmtest.Spread(req, loadPrefix+last, min(m.o.LLMLatency/5, time.Second), m.o.LLMLatency)
}
