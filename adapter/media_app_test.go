package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/config"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/llm/llmtest"
	"github.com/wecombot/wecombot/storage"
)

// visionModel is a fake OpenAI-compatible vision model: it answers with
// how many images the last turn carried and its text.
type visionModel struct {
	fake *llmtest.Server
	url  string
}

func newVisionModel(t *testing.T) *visionModel {
	t.Helper()
	fake := llmtest.New(func(r llmtest.Request) llmtest.Reply {
		last := r.Messages[len(r.Messages)-1]
		return llmtest.Reply{Content: "looked at " + strings.Repeat("🖼", len(last.Images)) + " for: " + last.Content}
	})
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); srv.Close() })
	return &visionModel{fake: fake, url: srv.URL + "/v1"}
}

func (v *visionModel) client() *llm.Client {
	return llm.New(llm.Config{BaseURL: v.url, APIKey: "sk-test", Model: "vision-model", Timeout: config.Duration(5 * time.Second)})
}

// lastImages are the data URLs of the last turn of the model's last request.
func (v *visionModel) lastImages(t *testing.T) []string {
	t.Helper()
	reqs := v.fake.Requests()
	if len(reqs) == 0 {
		t.Fatal("the model was not asked")
	}
	msgs := reqs[len(reqs)-1].Messages
	return msgs[len(msgs)-1].Images
}

var mediaReplies = Replies{TextOnly: "text only", ImagePrompt: "请描述这张图片。", ImageFailed: "cannot use that image", Unavailable: "unavailable"}

// appImageEnv is a self-built app on the simulator, answered by the fake
// vision model.
type appImageEnv struct {
	t     *testing.T
	sim   *wecomsim.Server
	model *visionModel
	db    *storage.DB
	cb    *wecomsim.Callback
	app   *App
}

func newAppImageEnv(t *testing.T, vision bool, db *storage.DB) *appImageEnv {
	t.Helper()
	e := &appImageEnv{t: t, model: newVisionModel(t), db: db}
	if e.db == nil {
		e.db = openTestDB(t)
	}
	aesKey := wecomsim.NewEncodingAESKey()
	e.sim = wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{{CorpID: cbCorp, AgentID: cbAgent, Secret: "s"}}})
	simSrv := httptest.NewServer(e.sim.Handler())
	t.Cleanup(simSrv.Close)
	app, err := New(Options{
		WeCom:    WeComConfig{APIBase: simSrv.URL, TokenRefreshBefore: config.Duration(5 * time.Minute)},
		Bots:     []BotConfig{{Name: "helpdesk", CorpID: cbCorp, AgentID: cbAgent, Secret: "s", Token: cbToken, EncodingAESKey: aesKey}},
		Store:    e.db,
		Pipeline: PipelineConfig{LLM: LLMConfig{Vision: vision}, Replies: mediaReplies},
		LLM:      e.model.client(),
		Log:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.app = app
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	gin.SetMode(gin.TestMode)
	engine := gin.New()
	app.Routes(engine)
	srv := httptest.NewServer(engine)
	t.Cleanup(srv.Close)
	e.cb = &wecomsim.Callback{URL: srv.URL + "/wecom/helpdesk/callback", Token: cbToken, EncodingAESKey: aesKey, CorpID: cbCorp}
	return e
}

// image posts an image message whose media/get answers data (nil: nothing
// stored under its media_id) and returns the text delivered in answer.
func (e *appImageEnv) image(msgID int64, data []byte) string {
	e.t.Helper()
	if data != nil {
		e.sim.PutMedia(mediaIDOf(msgID), data)
	}
	n := e.sim.DeliveredCount()
	status, body, err := e.cb.Post(e.t.Context(), wecomsim.MediaXML(cbCorp, "zhangsan", "image", msgID, 1764000000, cbAgent))
	if err != nil || status != 200 || body != "" {
		e.t.Fatalf("callback: %d %q %v", status, body, err)
	}
	return e.waitText(n + 1)
}

// mediaIDOf is the media_id of MediaXML's image msgID.
func mediaIDOf(msgID int64) string { return "media_image_" + strconv.FormatInt(msgID, 10) }

func (e *appImageEnv) waitText(n int) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	sent, err := e.sim.WaitDelivered(ctx, n)
	if err != nil {
		e.t.Fatalf("waiting for delivery %d: %v (delivered %+v)", n, err, sent)
	}
	return sent[n-1].Content
}

// lastMessage is the newest stored message.
func (e *appImageEnv) lastMessage() storage.Message {
	e.t.Helper()
	var last storage.Message
	for id := int64(1); ; id++ {
		m, err := e.db.GetMessage(e.t.Context(), id)
		if err != nil {
			return last
		}
		last = m
	}
}

func TestAppImageAnsweredByVisionModel(t *testing.T) {
	e := newAppImageEnv(t, true, nil)
	got := e.image(1, testPNG)
	if got != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("answer %q", got)
	}
	want := llm.Image{MIME: "image/png", Data: testPNG}.DataURL()
	if imgs := e.model.lastImages(t); len(imgs) != 1 || imgs[0] != want {
		t.Errorf("the model got %d images, not the exact bytes", len(imgs))
	}
	if e.sim.MediaGets() != 1 {
		t.Errorf("media/get answered %d times", e.sim.MediaGets())
	}
}

func TestAppImageVisionOff(t *testing.T) {
	e := newAppImageEnv(t, false, nil)
	if got := e.image(1, testPNG); got != "text only" {
		t.Errorf("answer %q, want text only", got)
	}
	if e.sim.MediaGets() != 0 || e.model.fake.Calls() != 0 {
		t.Errorf("media/get %d, model calls %d; want none", e.sim.MediaGets(), e.model.fake.Calls())
	}
}

// refusedImage is a case of an image the pipeline cannot use: its bytes,
// an errcode media/get answers instead (0: none) and the reason stored.
type refusedImage struct {
	name   string
	data   []byte
	fault  int
	reason string
}

func TestAppImageRefused(t *testing.T) {
	big := tooLargePNG()
	cases := []refusedImage{
		{"too large", big, 0, "image: larger than 10 MB"},
		{"not an image", []byte("<html>not found</html>"), 0, "image: not a JPEG, PNG, GIF or WebP image (text/html; charset=utf-8, 22 bytes)"},
		{"unknown media_id", nil, 0, "image: download failed: wecom: media/get: errcode 40007: invalid media_id"},
		{"media/get errcode", testPNG, 45009, "image: download failed: wecom: media/get: errcode 45009: api freq out of limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newAppImageEnv(t, true, nil)
			if c.fault != 0 {
				e.sim.FailNext(wecomsim.APIMediaGet, c.fault, "api freq out of limit", 1)
			}
			if got := e.image(1, c.data); got != "cannot use that image" {
				t.Errorf("answer %q", got)
			}
			if m := e.lastMessage(); !strings.HasPrefix(m.Error, c.reason) {
				t.Errorf("reason %q, want %q", m.Error, c.reason)
			}
			if e.model.fake.Calls() != 0 {
				t.Error("the model was asked")
			}
		})
	}
}

// TestAppImageTokenRevoked: media/get refuses the token (revoked since it
// was fetched); the token manager fetches a new one and the download is
// retried once.
func TestAppImageTokenRevoked(t *testing.T) {
	e := newAppImageEnv(t, true, nil)
	if _, err := e.app.TokenManager("helpdesk").Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	fetches := e.sim.TokenFetches(cbAgent)
	e.sim.RevokeTokens()
	if got := e.image(1, testPNG); got != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("answer %q", got)
	}
	if e.sim.TokenFetches(cbAgent) != fetches+1 || e.sim.Rejected()[40014] != 1 || e.sim.MediaGets() != 1 {
		t.Errorf("token fetches %d→%d, 40014 answered %d times, media/get %d; want one more fetch, one refusal, one download",
			fetches, e.sim.TokenFetches(cbAgent), e.sim.Rejected()[40014], e.sim.MediaGets())
	}
}

// TestAppImageStoredBeforeRestart: an image downloaded and stored by a
// process that stopped before answering is answered by the next start
// from the stored bytes; media/get (whose file may be gone) is not asked.
func TestAppImageStoredBeforeRestart(t *testing.T) {
	db := openTestDB(t)
	m := &storage.Message{Bot: "helpdesk", DedupeKey: "1", UserID: "zhangsan", MsgType: "image",
		Media: encodeMedia([]MediaRef{{MediaID: mediaIDOf(1)}}), ReceivedAt: time.Now()}
	if ok, err := db.InsertMessage(t.Context(), m); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := db.SaveMedia(t.Context(), storage.MessageMedia{MessageID: m.ID, MIME: "image/png", Size: int64(len(testPNG)), Data: testPNG}); err != nil {
		t.Fatal(err)
	}
	e := newAppImageEnv(t, true, db)
	if got := e.waitText(1); got != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("answer %q", got)
	}
	if imgs := e.model.lastImages(t); len(imgs) != 1 || imgs[0] != (llm.Image{MIME: "image/png", Data: testPNG}).DataURL() {
		t.Error("the model did not get the stored bytes")
	}
	if e.sim.MediaGets() != 0 {
		t.Errorf("media/get asked %d times", e.sim.MediaGets())
	}
}

// TestAppImageDownloadRetried: a download that fails in a way that may pass
// (WeCom busy, errcode -1) is tried again and the image answered; one
// WeCom refuses for good is not (TestAppImageRefused).
func TestAppImageDownloadRetried(t *testing.T) {
	e := newAppImageEnv(t, true, nil)
	e.sim.FailNext(wecomsim.APIMediaGet, -1, "system busy", 1)
	if got := e.image(1, testPNG); got != "looked at 🖼 for: 请描述这张图片。" {
		t.Errorf("answer %q", got)
	}
	if e.sim.Rejected()[-1] != 1 || e.sim.MediaGets() != 1 {
		t.Errorf("media/get refused %d times, answered %d; want 1 and 1", e.sim.Rejected()[-1], e.sim.MediaGets())
	}
}

func TestTransientFetch(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&APIError{API: "media/get", Code: -1}, true},
		{&APIError{API: "media/get", Code: 40007}, false},
		{&APIError{API: "media/get", Code: 45009}, false},
		{&HTTPError{API: "media/get", Status: 502}, true},
		{&HTTPError{API: "media/get", Status: 404}, false},
		{fmt.Errorf("aibot: download image: %w", statusError(503)), true},
		{fmt.Errorf("aibot: download image: %w", statusError(403)), false},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{errMediaTooLarge, false},
		{context.Canceled, false},
	} {
		if got := transientFetch(c.err); got != c.want {
			t.Errorf("transientFetch(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
