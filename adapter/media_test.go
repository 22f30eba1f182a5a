package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// testPNG is a PNG header and some bytes: what http.DetectContentType
// calls image/png.
var testPNG = append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{7, 0, 255}, 100)...)

// tooLargePNG is testPNG grown past MaxImageBytes.
func tooLargePNG() []byte {
	return append(append([]byte(nil), testPNG...), make([]byte, MaxImageBytes)...)
}

// fetcherFake is a channel's download: the bytes (or error) of each ref,
// by media id, counting the calls.
type fetcherFake struct {
	mu    sync.Mutex
	files map[string][]byte
	errs  map[string]error
	calls []string
}

func (f *fetcherFake) FetchMedia(_ context.Context, ref MediaRef, limit int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ref.MediaID)
	if err := f.errs[ref.MediaID]; err != nil {
		return nil, err
	}
	return readLimited(bytes.NewReader(f.files[ref.MediaID]), limit)
}

func (f *fetcherFake) fetched() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

var imageReplies = Replies{TextOnly: "text only", ImagePrompt: "describe it", ImageFailed: "cannot use that image", Unavailable: "unavailable"}

// seenImages answers with what the model received: the last turn's text
// and its images as data URLs.
func seenImages(_ context.Context, msgs []llm.Message) (string, error) {
	last := msgs[len(msgs)-1]
	var urls []string
	for _, img := range last.Images {
		urls = append(urls, img.DataURL())
	}
	return "saw " + last.Content + " " + strings.Join(urls, ","), nil
}

func imageEnv(t *testing.T, vision bool, f *fetcherFake) *pipelineEnv {
	e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{Vision: vision}, Replies: imageReplies}, seenImages)
	e.p.UseMedia("b", f)
	return e
}

func TestPipelineImages(t *testing.T) {
	dataURL := llm.Image{MIME: "image/png", Data: testPNG}.DataURL()
	big := tooLargePNG()
	cases := []struct {
		name     string
		vision   bool
		in       Inbound
		answer   string // the part sent
		state    string
		reason   string // stored with the message and its image
		history  []string
		download bool
	}{
		{"image alone", true, Inbound{MsgType: "image", Images: []MediaRef{{MediaID: "png"}}},
			"saw describe it " + dataURL, storage.MessageAnswering, "", []string{"user: [image]", "assistant: saw describe it " + dataURL}, true},
		{"mixed text and image", true, Inbound{Content: "what is this?", Images: []MediaRef{{MediaID: "png"}}},
			"saw what is this? " + dataURL, storage.MessageAnswering, "", []string{"user: [image]\nwhat is this?", "assistant: saw what is this? " + dataURL}, true},
		{"vision false", false, Inbound{MsgType: "image", Images: []MediaRef{{MediaID: "png"}}},
			"text only", storage.MessageAnswering, "", nil, false},
		{"vision false, mixed: its text", false, Inbound{Content: "hello", Images: []MediaRef{{MediaID: "png"}}},
			"saw hello ", storage.MessageAnswering, "", []string{"user: hello", "assistant: saw hello "}, false},
		{"too large", true, Inbound{MsgType: "image", Images: []MediaRef{{MediaID: "big"}}},
			"cannot use that image", storage.MessageAnswering, "image: larger than 10 MB", nil, true},
		{"not an image", true, Inbound{MsgType: "image", Images: []MediaRef{{MediaID: "pdf"}}},
			"cannot use that image", storage.MessageAnswering, "image: not a JPEG, PNG, GIF or WebP image (application/pdf, 13 bytes)", nil, true},
		{"download failed", true, Inbound{MsgType: "image", Images: []MediaRef{{MediaID: "gone"}}},
			"cannot use that image", storage.MessageAnswering, "image: download failed: wecom: media/get: errcode 40007: invalid media_id", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fetcherFake{files: map[string][]byte{"png": testPNG, "big": big, "pdf": []byte("%PDF-1.4 junk")},
					errs: map[string]error{"gone": &APIError{API: "media/get", Code: 40007, Msg: "invalid media_id"}}}
				e := imageEnv(t, c.vision, f)
				c.in.UserID = "u"
				id := e.send(c.in)
				m := e.done(id)
				if got := e.parts(id); len(got) != 1 || got[0] != c.answer {
					t.Errorf("parts %q, want %q", got, c.answer)
				}
				if m.State != c.state {
					t.Errorf("message %s, want %s", m.State, c.state)
				}
				if m.Error != c.reason {
					t.Errorf("message error %q, want %q", m.Error, c.reason)
				}
				if got := e.history("u"); strings.Join(got, "|") != strings.Join(c.history, "|") {
					t.Errorf("history %q, want %q", got, c.history)
				}
				if got := len(f.fetched()) > 0; got != c.download {
					t.Errorf("downloaded: %v, want %v", got, c.download)
				}
				media, err := e.db.MessageMedia(t.Context(), id, true)
				if err != nil {
					t.Fatal(err)
				}
				if c.download && (len(media) != 1 || media[0].Reason != c.reason || (c.reason == "" && !bytes.Equal(media[0].Data, testPNG))) {
					t.Errorf("stored media %+v", media)
				}
				if !c.download && len(media) != 0 {
					t.Errorf("stored media %+v without a download", media)
				}
			})
		})
	}
}

// TestPipelineImageLaterTurns: the image's bytes go to the model once;
// the next turn sends the placeholder from the history.
func TestPipelineImageLaterTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var asked [][]llm.Message
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{Vision: true, HistoryTurns: 5}, Replies: imageReplies},
			func(ctx context.Context, msgs []llm.Message) (string, error) {
				asked = append(asked, msgs)
				return seenImages(ctx, msgs)
			})
		e.p.UseMedia("b", &fetcherFake{files: map[string][]byte{"png": testPNG}})
		e.done(e.send(Inbound{UserID: "u", MsgType: "image", Images: []MediaRef{{MediaID: "png"}}}))
		e.done(e.text("u", "and now?"))
		if len(asked) != 2 {
			t.Fatalf("%d calls", len(asked))
		}
		for _, m := range asked[1] {
			if len(m.Images) != 0 {
				t.Errorf("the second call re-sent an image: %+v", m.Role)
			}
		}
		if h := asked[1][0]; h.Role != llm.RoleUser || h.Content != imagePlaceholder {
			t.Errorf("the history's image turn %+v, want the placeholder", h)
		}
	})
}

// TestPipelineImageRestart: an image stored before a restart is answered
// from its stored bytes: the 5-minute URL is not fetched again.
func TestPipelineImageRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fetcherFake{files: map[string][]byte{"png": testPNG}}
		model := make(chan struct{})
		e := newPipelineEnv(t, PipelineConfig{LLM: LLMConfig{Vision: true}, Replies: imageReplies},
			func(ctx context.Context, msgs []llm.Message) (string, error) {
				select {
				case <-model:
					return seenImages(ctx, msgs)
				case <-ctx.Done():
					return "", ctx.Err()
				}
			})
		e.p.UseMedia("b", f)
		id := e.send(Inbound{UserID: "u", MsgType: "image", Images: []MediaRef{{MediaID: "png"}}})
		synctest.Wait() // downloaded and stored; the model call hangs
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_ = e.p.Shutdown(ctx) // a stop: the message stays pending
		if m := e.message(id); m.State == storage.MessageAnswered || m.State == storage.MessageFailed {
			t.Fatalf("message %s after the stop", m.State)
		}
		close(model)

		f2 := &fetcherFake{errs: map[string]error{"png": errors.New("the URL expired")}}
		e.start()
		e.p.UseMedia("b", f2)
		if err := e.p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.done(id)
		want := "saw describe it " + llm.Image{MIME: "image/png", Data: testPNG}.DataURL()
		if got := e.parts(id); len(got) != 1 || got[0] != want {
			t.Errorf("parts after the restart %q, want %q", got, want)
		}
		if len(f.fetched()) != 1 || len(f2.fetched()) != 0 {
			t.Errorf("downloads: %v before, %v after the restart; want one before, none after", f.fetched(), f2.fetched())
		}
	})
}

// TestRedactKeepsTheCause: a masked error still says what failed, so a
// timeout while reading media/get's answer is tried again.
func TestRedactKeepsTheCause(t *testing.T) {
	cause := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}
	err := fmt.Errorf("wecom: media/get: read answer: %w", redact(cause))
	if !transientFetch(err) || !errors.Is(err, cause) {
		t.Errorf("redact lost the cause of %v", err)
	}
	if got := redact(errors.New("GET /cgi-bin/x?access_token=SECRET failed")).Error(); strings.Contains(got, "SECRET") {
		t.Errorf("redacted text %q shows the token", got)
	}
}
