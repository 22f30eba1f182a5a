package web

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/storage"
)

// TestMessageImageThumbnail: a user's stored image shows as a thumbnail
// served by the panel behind its login; one that could not be used shows
// its reason and no thumbnail.
func TestMessageImageThumbnail(t *testing.T) {
	e := newPanelEnv(t)
	ctx := t.Context()
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{1, 2, 3}, 50)...)
	shown := &storage.Message{Bot: "helpdesk", DedupeKey: "img1", UserID: "zhangsan", MsgType: "image", Media: `[{"media_id":"m1"}]`}
	refused := &storage.Message{Bot: "helpdesk", DedupeKey: "img2", UserID: "zhangsan", MsgType: "image", Media: `[{"media_id":"m2"}]`}
	for _, m := range []*storage.Message{shown, refused} {
		if _, err := e.db.InsertMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	must(t, e.db.SaveMedia(ctx, storage.MessageMedia{MessageID: shown.ID, MIME: "image/png", Size: int64(len(png)), Data: png}))
	must(t, e.db.SaveMedia(ctx, storage.MessageMedia{MessageID: refused.ID, Size: 11 << 20, Reason: "image: larger than 10 MB"}))
	must(t, e.db.SaveAnswer(ctx, storage.Answer{MessageID: refused.ID, Bot: "helpdesk", UserID: "zhangsan", Failure: "image: larger than 10 MB"}))

	src := "/admin/messages/" + itoa(shown.ID) + "/image/0"
	// Not without the login.
	if rec := e.get(src, ""); rec.Code == http.StatusOK || bytes.Contains(rec.Body.Bytes(), png) {
		t.Fatalf("the image is served without a login: %d", rec.Code)
	}
	s := e.login()
	rec := e.get("/admin/messages", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, `<img class="thumb" src="`+src+`"`, "image: larger than 10 MB")
	if strings.Contains(rec.Body.String(), "/admin/messages/"+itoa(refused.ID)+"/image/") {
		t.Error("a thumbnail for the image that could not be used")
	}
	rec = e.get(src, s)
	wantStatus(t, rec, 200)
	if rec.Header().Get("Content-Type") != "image/png" || !bytes.Equal(rec.Body.Bytes(), png) || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("image: %s, %d bytes", rec.Header().Get("Content-Type"), rec.Body.Len())
	}
	wantStatus(t, e.get("/admin/messages/"+itoa(refused.ID)+"/image/0", s), http.StatusNotFound)
	wantStatus(t, e.get("/admin/messages/"+itoa(shown.ID)+"/image/1", s), http.StatusNotFound)
	wantStatus(t, e.get("/admin/messages/x/image/0", s), http.StatusBadRequest)
}

// TestChatSendsAnImage: the chat page's image goes to the simulator with
// its caption (an AI bot's mixed message) or alone (an app's); what is not
// an image, or is too large, or an app's image with text, is refused and
// nothing is sent.
func TestChatSendsAnImage(t *testing.T) {
	var got []ChatRequest
	sim := &fakeSimulator{chat: func(ctx context.Context, req ChatRequest, update func(ChatTrace)) (ChatTrace, error) {
		got = append(got, req)
		return echoTrace(ctx, req, update)
	}}
	e := newChatEnv(t, sim)
	e.withAIBots()
	s := e.login()
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{5}, 40)...)
	post := func(form url.Values, img []byte) *httptest.ResponseRecorder {
		return e.do(request{method: "POST", path: "/admin/chat", cookie: s, form: form, files: map[string][]byte{"image": img}})
	}
	wantStatus(t, post(url.Values{"bot": {aiCallbackBot}, "user": {"u"}, "text": {"这是什么？"}}, png), http.StatusSeeOther)
	wantStatus(t, post(url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {""}}, png), http.StatusSeeOther)
	if len(got) != 2 || !bytes.Equal(got[0].Image, png) || got[0].Text != "这是什么？" || !bytes.Equal(got[1].Image, png) || got[1].Text != "" {
		t.Fatalf("sent %+v", got)
	}
	wantBody(t, e.get("/admin/chat", s), "[image, 48 bytes]")

	bad := []struct {
		form url.Values
		img  []byte
		want string
	}{
		{url.Values{"bot": {"helpdesk"}, "user": {"u"}, "text": {"caption"}}, png, "send the image alone"},
		{url.Values{"bot": {aiCallbackBot}, "user": {"u"}, "text": {""}}, []byte("%PDF-1.4"), "not a JPEG, PNG, GIF or WebP"},
		{url.Values{"bot": {aiCallbackBot}, "user": {"u"}, "text": {""}}, append(append([]byte(nil), png...), make([]byte, chatMaxImage)...), "larger than 10 MB"},
	}
	for _, b := range bad {
		rec := post(b.form, b.img)
		wantStatus(t, rec, http.StatusBadRequest)
		wantBody(t, rec, b.want)
	}
	if len(got) != 2 {
		t.Fatalf("refused images were sent: %+v", got[2:])
	}

	// A simulator that cannot take images says so.
	sim.chat = func(context.Context, ChatRequest, func(ChatTrace)) (ChatTrace, error) {
		return ChatTrace{}, fmt.Errorf("simulator chat: %w", ErrChatUnsupported)
	}
	rec := post(url.Values{"bot": {"helpdesk"}, "user": {"u"}}, png)
	wantStatus(t, rec, http.StatusBadRequest)
	wantBody(t, rec, "Only the demo")
}
