package adapter

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// heldModel answers "answer to <question>", except that the question held
// waits for release (or the instance's stop); asked reports it.
type heldModel struct {
	held    string
	asked   chan struct{}
	release chan struct{}
	once    sync.Once
}

// newHeldModel is the model of e, held on question held; it is released
// at the end of the test at the latest.
func newHeldModel(e *kfEnv, held string) *heldModel {
	m := &heldModel{held: held, asked: make(chan struct{}, 1), release: make(chan struct{})}
	e.model = m
	return m
}

// free lets the held question be answered.
func (m *heldModel) free() { m.once.Do(func() { close(m.release) }) }

func (m *heldModel) Complete(ctx context.Context, msgs []llm.Message) (string, error) {
	q := msgs[len(msgs)-1].Content
	if q == m.held {
		m.asked <- struct{}{}
		select {
		case <-m.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "answer to " + q, nil
}

// waitAsked waits for the held question to reach the model.
func (m *heldModel) waitAsked(t *testing.T) {
	t.Helper()
	guard := time.NewTimer(10 * time.Second)
	defer guard.Stop()
	select {
	case <-m.asked:
	case <-guard.C:
		t.Fatalf("the model was not asked %q", m.held)
	}
}

// withdrawn are the bot's messages stored ignored as withdrawn by the
// customer: their contents.
func (e *kfEnv) withdrawn() []string {
	e.t.Helper()
	var out []string
	for _, m := range e.messages(storage.MessageIgnored) {
		if m.Error == kfRecalled {
			out = append(out, m.Content)
		}
	}
	return out
}

// recalls is how many user_recall_msg events are stored.
func (e *kfEnv) recalls() int {
	e.t.Helper()
	n := 0
	for _, m := range e.messages(storage.MessageIgnored) {
		if m.Event == "user_recall_msg" {
			n++
		}
	}
	return n
}

// recallWhileHeld has the customer withdraw their message msgID (content)
// while the model holds their earlier one, then lets it answer: the
// earlier message is answered, the withdrawn one not, and the next one is.
func (e *kfEnv) recallWhileHeld(model *heldModel, msgID, content string) {
	e.t.Helper()
	if _, err := e.sim.KFCustomerRecalls(e.t.Context(), kfAccount, kfCustomer, msgID); err != nil {
		e.t.Fatal(err)
	}
	eventually.True(e.t, func() bool { return len(e.withdrawn()) == 1 }, "the withdrawn message was not dropped")
	model.free()
	if got := e.received(kfCustomer, 1); got[0] != "answer to "+model.held {
		e.t.Errorf("customer got %q", got)
	}
	e.settled()
	if got := e.withdrawn(); len(got) != 1 || got[0] != content {
		e.t.Errorf("withdrawn %q, want %q", got, content)
	}
	e.writes(kfCustomer, "第三")
	if got := e.received(kfCustomer, 2); got[1] != "answer to 第三" {
		e.t.Errorf("customer got %q; the withdrawn message must not be answered", got)
	}
}

// TestKFRecalledLater: a message pulled in one page and withdrawn in a later
// one, while the bot is still busy with the customer's earlier message, is
// not answered: it is stored ignored, withdrawn by the customer. Only the
// later-page mechanism (recalled) sees this recall.
func TestKFRecalledLater(t *testing.T) {
	e := newKFEnv(t)
	model := newHeldModel(e, "第一")
	e.start("a", true)
	t.Cleanup(model.free) // before the stop
	e.writes(kfCustomer, "第一")
	model.waitAsked(t)
	second := e.writes(kfCustomer, "第二") // a page of its own
	eventually.True(t, func() bool { return e.states(storage.MessageReceived) == 2 }, "the second message was not stored")
	e.recallWhileHeld(model, second, "第二")
}

// TestKFRecalledInBatch: two messages stored by one page are both read for
// answering (one batch, alone on the database); the second, withdrawn in a
// later page while the model answers the first, is not answered.
func TestKFRecalledInBatch(t *testing.T) {
	e := newKFEnv(t)
	model := newHeldModel(e, "第一")
	in := e.start("a", true)
	t.Cleanup(model.free) // before the stop
	e.sim.SetKFCallback(kfAgent, nil)
	e.writes(kfCustomer, "第一")
	second := e.writes(kfCustomer, "第二")
	e.callbacksTo(in)
	if err := e.sim.KFAnnounce(t.Context(), kfAccount); err != nil {
		t.Fatal(err)
	}
	model.waitAsked(t)
	e.recallWhileHeld(model, second, "第二")
}

// TestKFRecalledAfterAnswer: a recall of a message already answered takes
// nothing back: the answer stays sent and the message answered; the recall
// is stored as an event.
func TestKFRecalledAfterAnswer(t *testing.T) {
	e := newKFEnv(t)
	e.start("a", true)
	id := e.writes(kfCustomer, "你好")
	e.received(kfCustomer, 1)
	e.settled()
	if _, err := e.sim.KFCustomerRecalls(t.Context(), kfAccount, kfCustomer, id); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return e.recalls() == 1 }, "the recall was not stored")
	e.settled()
	if got := e.withdrawn(); len(got) != 0 {
		t.Errorf("withdrawn %q, want none", got)
	}
	answered := e.messages(storage.MessageAnswered)
	if len(answered) != 1 || answered[0].Content != "你好" || answered[0].Error != "" {
		t.Errorf("answered %+v; want the message still answered", answered)
	}
	if got := e.received(kfCustomer, 1); got[0] != "answer to 你好" {
		t.Errorf("customer got %q", got)
	}
}

// TestKFRecalledWhileAnswered: alone on the database a message stays
// received while the model answers it; withdrawn then, its answer is not
// sent and it stays withdrawn.
func TestKFRecalledWhileAnswered(t *testing.T) {
	e := newKFEnv(t)
	model := newHeldModel(e, "算了")
	e.start("a", true)
	t.Cleanup(model.free) // before the stop
	id := e.writes(kfCustomer, "算了")
	model.waitAsked(t)
	if _, err := e.sim.KFCustomerRecalls(t.Context(), kfAccount, kfCustomer, id); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, func() bool { return len(e.withdrawn()) == 1 }, "the withdrawn message was not dropped")
	model.free()
	e.settled()
	e.writes(kfCustomer, "新的")
	if got := e.received(kfCustomer, 1); got[0] != "answer to 新的" {
		t.Errorf("customer got %q; the withdrawn message must not be answered", got)
	}
	if got := e.withdrawn(); len(got) != 1 || got[0] != "算了" {
		t.Errorf("withdrawn %q, want the message", got)
	}
	if turns, err := e.db.History(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), 5); err != nil || len(turns) != 2 || turns[0].Content != "新的" {
		t.Errorf("history %+v, %v; want only the answered message", turns, err)
	}
}
