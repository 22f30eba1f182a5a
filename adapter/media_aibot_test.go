package adapter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// newSimClock is a clock for the simulator alone that the test moves: the
// expiry of media URLs.
func newSimClock() *clockwork.FakeClock { return clockwork.NewFakeClockAt(time.Now()) }

// withVision answers the AI bot with model, images seen.
func withVision(model *visionModel, vision bool, clock *clockwork.FakeClock) aibotEnvOption {
	return func(e *aibotEnv, _ *BotConfig) {
		e.vision, e.completer, e.simNow = vision, model.client(), clock.Now
		e.replies = mediaReplies
	}
}

// imageURL issues an encrypted media URL for data under the bot's
// EncodingAESKey (callback mode).
func (e *aibotEnv) imageURL(data []byte) string {
	e.t.Helper()
	u, err := e.sim.IssueAIBotMedia(e.cb.SimURL, e.cb.EncodingAESKey, data)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func TestAIBotCallbackImageAnsweredByVisionModel(t *testing.T) {
	model := newVisionModel(t)
	e := newAIBotEnv(t, withVision(model, true, newSimClock()))
	ex := e.post(wecomsim.AIBotImage(aiBotID, "zhangsan", e.imageURL(testPNG)))
	if r := last(t, ex); !r.Finish || r.Content != "looked at 🖼 for: 请描述这张图片。" {
		t.Fatalf("last reply %+v", r)
	}
	want := llm.Image{MIME: "image/png", Data: testPNG}.DataURL()
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != want {
		t.Error("the model did not get the exact bytes")
	}

	// Mixed: its text and its images in one turn; a quoted image too.
	gif := []byte("GIF89a\x01\x00\x01\x00 tiny")
	ex = e.post(wecomsim.AIBotMixedMessage(aiBotID, "", "zhangsan",
		wecomsim.MixedText("这两张图有什么不同？"), wecomsim.MixedImage(e.imageURL(testPNG))).Quoting(wecomsim.ImageQuote(e.imageURL(gif))))
	if r := last(t, ex); !r.Finish || !strings.HasPrefix(r.Content, "looked at 🖼🖼 for: ") || !strings.HasSuffix(r.Content, "这两张图有什么不同？") {
		t.Fatalf("mixed: last reply %+v", r)
	}
	imgs := model.lastImages(t)
	if len(imgs) != 2 || imgs[0] != want || imgs[1] != (llm.Image{MIME: "image/gif", Data: gif}).DataURL() {
		t.Errorf("mixed: the model got %d images, not the message's then the quote's", len(imgs))
	}
	if e.sim.AIBotMediaGets() != 3 {
		t.Errorf("%d downloads, want 3", e.sim.AIBotMediaGets())
	}
}

func TestAIBotCallbackImageVisionOff(t *testing.T) {
	model := newVisionModel(t)
	e := newAIBotEnv(t, withVision(model, false, newSimClock()))
	ex := e.post(wecomsim.AIBotImage(aiBotID, "zhangsan", e.imageURL(testPNG)))
	if r := last(t, ex); !r.Finish || r.Content != "text only" {
		t.Fatalf("last reply %+v", r)
	}
	if e.sim.AIBotMediaGets() != 0 || model.fake.Calls() != 0 {
		t.Error("downloaded or asked the model with vision off")
	}
}

func TestAIBotCallbackImageRefused(t *testing.T) {
	big := tooLargePNG()
	cases := []struct {
		name    string
		data    []byte
		expired bool
		reason  string
	}{
		{"too large", big, false, "image: larger than 10 MB"},
		{"not an image", []byte("%PDF-1.7 a document"), false, "image: not a JPEG, PNG, GIF or WebP image (application/pdf, 19 bytes)"},
		{"expired URL", testPNG, true, "image: download failed: aibot: download image: HTTP status 403"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			model := newVisionModel(t)
			clock := newSimClock()
			e := newAIBotEnv(t, withVision(model, true, clock))
			u := e.imageURL(c.data)
			if c.expired {
				clock.Advance(wecomsim.AIBotMediaLifetime)
			}
			ex := e.post(wecomsim.AIBotImage(aiBotID, "zhangsan", u))
			if r := last(t, ex); !r.Finish || r.Content != "cannot use that image" {
				t.Fatalf("last reply %+v", r)
			}
			msgs, err := e.messages()
			if err != nil || len(msgs) != 1 || msgs[0].State != storage.MessageFailed || !strings.HasPrefix(msgs[0].Error, c.reason) {
				t.Fatalf("messages %+v, %v; want one failed with %q", msgs, err, c.reason)
			}
			media, err := e.store.MessageMedia(t.Context(), msgs[0].ID, false)
			if err != nil || len(media) != 1 || media[0].Reason != msgs[0].Error {
				t.Errorf("stored media %+v, %v; want the reason", media, err)
			}
			if model.fake.Calls() != 0 {
				t.Error("the model was asked")
			}
		})
	}
}

// completeOnly hides the client's Stream: the answer comes whole.
type completeOnly struct{ c Completer }

func (o completeOnly) Complete(ctx context.Context, msgs []llm.Message) (string, error) {
	return o.c.Complete(ctx, msgs)
}

// imageMessage is an image message of the long connection: testPNG behind
// a fresh media URL, encrypted with key, the message's aeskey.
func (e *wsEnv) imageMessage(key string) wecomsim.AIBotBody {
	e.t.Helper()
	base := strings.TrimSuffix(strings.Replace(e.url, "ws", "http", 1), "/wecom"+wecomsim.AIBotWSPath)
	u, err := e.sim.IssueAIBotMedia(base, key, testPNG)
	if err != nil {
		e.t.Fatal(err)
	}
	body := wecomsim.AIBotImage(wsTestBotID, "zhangsan", u)
	body.Image.AESKey = key
	return body
}

// TestAIBotWSImage: on the long connection each image carries its own
// aeskey; the image reaches the model decrypted; an image whose URL
// expired before the download gets the polite text.
func TestAIBotWSImage(t *testing.T) {
	e := newWSEnv(t)
	model := newVisionModel(t)
	in := e.startVision(model)
	e.connected(in)

	key := wecomsim.NewEncodingAESKey() // 43 characters: base64 without its "="
	body := e.imageMessage(key)
	req := e.deliver(body)
	if s := e.finished(req); s.Content != "looked at 🖼 for: 请描述这张图片。" {
		t.Fatalf("stream %+v", s)
	}
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the exact bytes")
	}

	body = e.imageMessage(key)
	e.clock.Advance(wecomsim.AIBotMediaLifetime)
	req = e.deliver(body)
	if s := e.finished(req); s.Content != "cannot use that image" {
		t.Fatalf("expired: stream %+v", s)
	}
	if e.sim.AIBotMediaGets() != 1 {
		t.Errorf("%d downloads answered, want 1", e.sim.AIBotMediaGets())
	}
	e.noViolations()
}

// stuckModel never answers: each call is reported on asked, then waits
// until its instance stops.
type stuckModel struct{ asked chan struct{} }

func newStuckModel() stuckModel { return stuckModel{asked: make(chan struct{}, 1)} }

func (m stuckModel) Complete(ctx context.Context, _ []llm.Message) (string, error) {
	select {
	case m.asked <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return "", ctx.Err()
}

// waitAsked waits for the model to be asked.
func (m stuckModel) waitAsked(t *testing.T) {
	t.Helper()
	guard := time.NewTimer(wsGuard)
	defer guard.Stop()
	select {
	case <-m.asked:
	case <-guard.C:
		t.Fatal("the model was not asked")
	}
}

// storedImage checks that message id has the one image data stored.
func storedImage(t *testing.T, db *storage.DB, id int64, data []byte) {
	t.Helper()
	media, err := db.MessageMedia(t.Context(), id, true)
	if err != nil || len(media) != 1 || media[0].Reason != "" || string(media[0].Data) != string(data) {
		t.Fatalf("stored media %d, %v; want the image", len(media), err)
	}
}

// TestAIBotCallbackImageRestart: the instance that stored the message
// downloads its image and stops before the model answers; the next start
// answers the stream WeCom still polls from the stored bytes, after the
// 5-minute URL has expired.
func TestAIBotCallbackImageRestart(t *testing.T) {
	model, stuck, clock := newVisionModel(t), newStuckModel(), newSimClock()
	e := newAIBotEnv(t, withVision(model, true, clock), func(e *aibotEnv, _ *BotConfig) { e.completer = stuck })
	ex := e.cb.Start(t.Context(), wecomsim.AIBotImage(aiBotID, "zhangsan", e.imageURL(testPNG)))
	stuck.waitAsked(t) // the image is downloaded and stored before the model is asked
	msgs, err := e.messages()
	if err != nil || len(msgs) != 1 || msgs[0].State != storage.MessageReceived {
		t.Fatalf("messages %+v, %v; want one received", msgs, err)
	}
	storedImage(t, e.store, msgs[0].ID, testPNG)

	clock.Advance(wecomsim.AIBotMediaLifetime)
	e.restart(model.client())
	select {
	case <-ex.Done():
	case <-t.Context().Done():
		t.Fatal("the stream never finished")
	}
	if err := ex.Err(); err != nil {
		t.Fatal(err)
	}
	if r := last(t, ex); !r.Finish || r.Content != "looked at 🖼 for: 请描述这张图片。" {
		t.Fatalf("last reply %+v", r)
	}
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the stored bytes")
	}
	if n := e.sim.AIBotMediaGets(); n != 1 {
		t.Errorf("%d downloads, want 1 (before the restart)", n)
	}
}

// TestAIBotWSImageRestart: on the long connection, the instance that
// downloaded and stored the image stops before the model answers; the next
// start answers from the stored bytes (the URL has expired), by
// aibot_send_msg since the req_id died with the first.
func TestAIBotWSImageRestart(t *testing.T) {
	e := newWSEnv(t)
	model, stuck := newVisionModel(t), newStuckModel()
	first := e.startWith("one", true, stuck, mediaReplies, LLMConfig{Vision: true})
	e.connected(first)
	key := wecomsim.NewEncodingAESKey()
	body := e.imageMessage(key)
	e.deliver(body)
	stuck.waitAsked(t)
	storedImage(t, e.db, 1, testPNG)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = first.Shutdown(ctx) // as a crash leaves it: no waiting for the answer
	if m, err := e.db.GetMessage(t.Context(), 1); err != nil || m.State != storage.MessageReceived {
		t.Fatalf("message %+v, %v; want it received", m, err)
	}

	e.clock.Advance(wecomsim.AIBotMediaLifetime)
	second := e.startVision(model)
	e.connected(second)
	if p := e.pushedRetrying(1, 1)[0]; p.ChatID != "zhangsan" || p.Markdown.Content != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("push: %+v", p)
	}
	if imgs := model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the stored bytes")
	}
	if n := e.sim.AIBotMediaGets(); n != 1 {
		t.Errorf("%d downloads, want 1 (before the restart)", n)
	}
	eventually.True(t, func() bool {
		m, err := e.db.GetMessage(t.Context(), 1)
		return err == nil && m.State == storage.MessageAnswered
	}, "the message was not answered")
	e.noViolations()
}
