package web

import (
	"bytes"
	"net/http"
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
