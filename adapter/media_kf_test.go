package adapter

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// kfImageEnv is the kf channel answered by the fake vision model.
func kfImageEnv(t *testing.T, vision bool) (*kfEnv, *visionModel) {
	e := newKFEnv(t)
	model := newVisionModel(t)
	e.model = model.client()
	e.llm = LLMConfig{Vision: vision}
	e.replies = &mediaReplies
	return e, model
}

func (e *kfEnv) sendsImage(customer string, data []byte) {
	e.t.Helper()
	if _, err := e.sim.KFCustomerSendsImage(e.t.Context(), kfAccount, customer, data); err != nil {
		e.t.Fatal(err)
	}
}

func TestKFImageAnsweredByVisionModel(t *testing.T) {
	e, model := kfImageEnv(t, true)
	e.start("a", true)
	e.sendsImage(kfCustomer, testPNG)
	if got := e.received(kfCustomer, 1); got[0] != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("customer got %q", got)
	}
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the exact bytes")
	}
	e.settled()
	turns, err := e.db.History(t.Context(), "helpdesk", kfUser(kfAccount, kfCustomer), 5)
	if err != nil || len(turns) != 2 || turns[0].Content != imagePlaceholder {
		t.Errorf("history %+v, %v; want the placeholder and the answer", turns, err)
	}
}

func TestKFImageVisionOff(t *testing.T) {
	e, model := kfImageEnv(t, false)
	e.start("a", true)
	e.sendsImage(kfCustomer, testPNG)
	if got := e.received(kfCustomer, 1); got[0] != "text only" {
		t.Errorf("customer got %q", got)
	}
	if e.sim.MediaGets() != 0 || model.fake.Calls() != 0 {
		t.Error("downloaded or asked the model with vision off")
	}
}

func TestKFImageRefused(t *testing.T) {
	big := tooLargePNG()
	cases := []refusedImage{
		{"too large", big, 0, "image: larger than 10 MB"},
		{"not an image", []byte("plain words"), 0, "image: not a JPEG, PNG, GIF or WebP image (text/plain; charset=utf-8, 11 bytes)"},
		{"media/get errcode", testPNG, 40007, "image: download failed: wecom: media/get: errcode 40007"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, model := kfImageEnv(t, true)
			e.start("a", true)
			if c.fault != 0 {
				e.sim.FailNext(wecomsim.APIMediaGet, c.fault, "invalid media_id", 1)
			}
			e.sendsImage(kfCustomer, c.data)
			if got := e.received(kfCustomer, 1); got[0] != "cannot use that image" {
				t.Errorf("customer got %q", got)
			}
			e.settled()
			ms := e.messages(storage.MessageFailed, storage.MessageAnswered)
			if len(ms) != 1 || !strings.HasPrefix(ms[0].Error, c.reason) {
				t.Errorf("messages %+v; want the image failed with %q", ms, c.reason)
			}
			if model.fake.Calls() != 0 {
				t.Error("the model was asked")
			}
		})
	}
}

// TestKFImageTokenRevoked: media/get refuses the app token (40014, after
// the pull used it): a new one is fetched and the download retried once.
func TestKFImageTokenRevoked(t *testing.T) {
	e, _ := kfImageEnv(t, true)
	in := e.start("a", true)
	if _, err := in.TokenManager("helpdesk").Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	fetches := e.sim.TokenFetches(kfAgent)
	e.sim.FailNext(wecomsim.APIMediaGet, 40014, "invalid access_token", 1)
	e.sendsImage(kfCustomer, testPNG)
	if got := e.received(kfCustomer, 1); got[0] != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("customer got %q", got)
	}
	if e.sim.TokenFetches(kfAgent) != fetches+1 || e.sim.MediaGets() != 1 {
		t.Errorf("token fetches %d→%d, media/get %d", fetches, e.sim.TokenFetches(kfAgent), e.sim.MediaGets())
	}
}

// answerlessStore is the database except that answers cannot be stored:
// a process that stops after downloading an image, before its answer.
type answerlessStore struct{ *storage.DB }

func (answerlessStore) SaveAnswer(context.Context, storage.Answer) error {
	return errors.New("database is locked")
}

// TestKFImageRestart: an image downloaded and stored by an instance that
// stopped before storing its answer is answered by the next start from
// the stored bytes; media/get is not asked again.
func TestKFImageRestart(t *testing.T) {
	e, model := kfImageEnv(t, true)
	e.store = answerlessStore{e.db}
	first := e.start("a", true)
	e.sendsImage(kfCustomer, testPNG)
	eventually.True(t, func() bool {
		ms := e.messages(storage.MessageReceived, storage.MessageAnswering)
		if len(ms) != 1 {
			return false
		}
		media, err := e.db.MessageMedia(t.Context(), ms[0].ID, false)
		return err == nil && len(media) == 1 && model.fake.Calls() == 1
	}, "the image was not downloaded and stored")
	first.stop()
	if n := len(e.sim.KFReceived(kfAccount, kfCustomer)); n != 0 {
		t.Fatalf("the customer got %d messages from the stopped instance", n)
	}

	e.store = nil
	e.start("b", true)
	if got := e.received(kfCustomer, 1); got[0] != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("customer got %q", got)
	}
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the stored bytes")
	}
	if e.sim.MediaGets() != 1 {
		t.Errorf("media/get answered %d times, want 1 (before the restart)", e.sim.MediaGets())
	}
}
