package adapter

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/llm"
)

// Model states, as ModelHealth reports them.
const (
	ModelUnknown = "unknown" // no call made yet
	ModelOK      = "ok"      // the last call answered
	ModelFailing = "failing" // the last call failed
)

// ModelHealth is what the admin API and the panel show of the calls to a
// model endpoint (Endpoint): how the last one went and when one last
// worked. The bots calling one endpoint share its health.
type ModelHealth struct {
	Model string // the configured model's name
	// Host is the model's base_url host; empty: none (the echo model).
	Host string
	// KeySet says whether an api_key is set; the key is never shown.
	KeySet bool
	// Endpoint numbers the pipeline's endpoints from 1: the bots with one
	// number call one endpoint, and share this health.
	Endpoint int
	State    string
	// LastError is the last failure's error, kept after a success until
	// the next failure; it never carries the key or the request URL
	// (llm.callError leaves them out).
	LastError string
	Cause     string // llm.CauseOf the last failure
	Hint      string // llm.HintFor the last failure and the endpoint's key
	LastOKAt  time.Time
}

// modelHealth follows the calls to one model endpoint, from where the
// pipeline makes them (Pipeline.ask).
type modelHealth struct {
	clock   clockwork.Clock
	keyName string // Endpoint.KeyName

	mu sync.Mutex
	st ModelHealth
}

func newModelHealth(e Endpoint, number int, clock clockwork.Clock) *modelHealth {
	return &modelHealth{clock: clock, keyName: e.KeyName, st: ModelHealth{
		Model: e.Model, Host: e.Host, KeySet: e.KeySet, Endpoint: number, State: ModelUnknown,
	}}
}

// record notes how a call to the model ended. Errors that are not the
// model's (llm.CauseOf says none: storage, a cancelled context, an empty
// text) say nothing of its health and are not recorded.
func (h *modelHealth) record(err error) {
	cause := llm.CauseOf(err)
	if err != nil && cause == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &h.st
	if err == nil {
		s.State, s.LastOKAt = ModelOK, h.clock.Now()
		return
	}
	s.State, s.LastError, s.Cause, s.Hint = ModelFailing, err.Error(), cause, llm.HintFor(err, h.keyName)
}

// status is the endpoint's health.
func (h *modelHealth) status() ModelHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}
