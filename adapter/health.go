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

// ModelHealth is what the admin API and the panel show of a bot's calls to
// the model: how the last one went and when one last worked.
type ModelHealth struct {
	Model string // the configured model's name
	State string
	// LastError is the last failure's error, kept after a success until
	// the next failure; it never carries the key or the request URL
	// (llm.callError leaves them out).
	LastError string
	Cause     string // llm.CauseOf the last failure
	Hint      string // llm.Hint of the last failure
	LastOKAt  time.Time
}

// modelHealth follows the calls to the model, per bot, from where the
// pipeline makes them (Pipeline.ask).
type modelHealth struct {
	model string
	clock clockwork.Clock

	mu   sync.Mutex
	bots map[string]*ModelHealth
}

func newModelHealth(model string, clock clockwork.Clock) *modelHealth {
	return &modelHealth{model: model, clock: clock, bots: map[string]*ModelHealth{}}
}

// record notes how a call of bot to the model ended. Errors that are not
// the model's (llm.CauseOf says none: storage, a cancelled context, an
// empty text) say nothing of its health and are not recorded.
func (h *modelHealth) record(bot string, err error) {
	cause := llm.CauseOf(err)
	if err != nil && cause == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.bots[bot]
	if !ok {
		s = &ModelHealth{}
		h.bots[bot] = s
	}
	if err == nil {
		s.State, s.LastOKAt = ModelOK, h.clock.Now()
		return
	}
	s.State, s.LastError, s.Cause, s.Hint = ModelFailing, err.Error(), cause, llm.Hint(err)
}

// status is the health of bot's calls.
func (h *modelHealth) status(bot string) ModelHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := ModelHealth{State: ModelUnknown}
	if s, ok := h.bots[bot]; ok {
		st = *s
	}
	st.Model = h.model
	return st
}
