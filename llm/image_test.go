package llm

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// pngBytes is the start of a PNG file and some bytes after it.
var pngBytes = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x02\x03")

// TestImagesAreContentParts: a user's turn with an image reaches the model
// as a text part and an image_url part whose data URL holds the exact
// bytes, plain and streamed; turns without images stay plain strings.
func TestImagesAreContentParts(t *testing.T) {
	c, fake := newClient(t, nil, 5*time.Second)
	msgs := []Message{
		{Role: RoleUser, Content: "[image]"},
		{Role: RoleAssistant, Content: "a cat"},
		{Role: RoleUser, Content: "这是什么错误？", Images: []Image{{MIME: "image/png", Data: pngBytes}}},
	}
	want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(pngBytes)
	if _, err := c.Complete(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stream(context.Background(), msgs, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// An image alone, without text, is a message too.
	if _, err := c.Complete(context.Background(), []Message{{Role: RoleUser, Images: []Image{{MIME: "image/png", Data: pngBytes}}}}); err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, req := range reqs[:2] {
		got := req.Messages[2]
		if got.Content != "这是什么错误？" || len(got.Images) != 1 || got.Images[0] != want {
			t.Errorf("request %d: last message %+v, want the text and %s", i, got, want)
		}
		if h := req.Messages[0]; h.Content != "[image]" || len(h.Images) != 0 {
			t.Errorf("request %d: history %+v", i, h)
		}
	}
	if got := reqs[2].Messages[0]; got.Content != "" || len(got.Images) != 1 || got.Images[0] != want {
		t.Errorf("image alone: %+v", got)
	}
}

func TestEchoDescribesImages(t *testing.T) {
	got, err := Echo{}.Complete(context.Background(), []Message{{Role: RoleUser, Content: "看看", Images: []Image{{MIME: "image/png", Data: pngBytes}}}})
	if err != nil || !strings.Contains(got, "看看 [image/png, 20 bytes]") {
		t.Fatalf("Echo = %q, %v", got, err)
	}
	if _, err := (Echo{}).Complete(context.Background(), []Message{{Role: RoleUser}}); err != ErrEmpty {
		t.Fatalf("Echo of nothing: %v", err)
	}
}
