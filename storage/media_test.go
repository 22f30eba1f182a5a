package storage

import (
	"bytes"
	"testing"
	"time"
)

func TestMessageMedia(t *testing.T) { eachDriver(t, testMessageMedia) }

func testMessageMedia(t *testing.T) {
	db, clk := newDB(t)
	ctx := t.Context()
	m := Message{Bot: "bot", DedupeKey: "img", UserID: "u", MsgType: "image", Media: `[{"media_id":"M1"}]`}
	if ok, err := db.InsertMessage(ctx, &m); err != nil || !ok {
		t.Fatalf("InsertMessage = %v, %v", ok, err)
	}
	got, err := db.GetMessage(ctx, m.ID)
	must(t, err)
	if got.Media != m.Media {
		t.Errorf("Media = %q, want %q", got.Media, m.Media)
	}
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0, 0xff}, 300)...)
	must(t, db.SaveMedia(ctx, MessageMedia{MessageID: m.ID, Seq: 0, MIME: "image/png", Size: int64(len(png)), Data: png}))
	must(t, db.SaveMedia(ctx, MessageMedia{MessageID: m.ID, Seq: 1, Size: 11 << 20, Reason: "too large"}))
	// A repeated download stores nothing new.
	must(t, db.SaveMedia(ctx, MessageMedia{MessageID: m.ID, Seq: 0, MIME: "image/gif", Data: []byte("GIF89a")}))
	media, err := db.MessageMedia(ctx, m.ID, true)
	must(t, err)
	if len(media) != 2 || !bytes.Equal(media[0].Data, png) || media[0].MIME != "image/png" || media[0].Size != int64(len(png)) ||
		media[1].Reason != "too large" || len(media[1].Data) != 0 {
		t.Fatalf("MessageMedia = %+v", media)
	}
	sameTime(t, "CreatedAt", media[0].CreatedAt, t0)
	light, err := db.MessageMedia(ctx, m.ID, false)
	must(t, err)
	if len(light) != 2 || len(light[0].Data) != 0 || light[0].Size != int64(len(png)) {
		t.Errorf("MessageMedia without data = %+v", light)
	}
	byID, err := db.MediaOf(ctx, []int64{m.ID, m.ID + 100})
	must(t, err)
	if len(byID) != 1 || len(byID[m.ID]) != 2 || len(byID[m.ID][0].Data) != 0 || byID[m.ID][0].MIME != "image/png" || byID[m.ID][1].Seq != 1 {
		t.Errorf("MediaOf = %+v", byID)
	}
	if err := db.SaveMedia(ctx, MessageMedia{MessageID: m.ID, Seq: 2, Data: make([]byte, MaxMediaBytes+1)}); err == nil {
		t.Error("SaveMedia of more than MaxMediaBytes: no error")
	}

	// Pruned with its message, not before.
	other := insertMsg(t, db, "bot", "u", "pending") // still received: kept
	must(t, db.SaveMedia(ctx, MessageMedia{MessageID: other.ID, Seq: 0, MIME: "image/png", Data: png}))
	must(t, db.SaveAnswer(ctx, Answer{MessageID: m.ID, Bot: "bot", UserID: "u"}))
	clk.Advance(48 * time.Hour)
	res, err := db.Prune(ctx, clk.now.Add(-24*time.Hour))
	must(t, err)
	if res.Messages != 1 || res.Media != 2 {
		t.Errorf("Prune = %+v, want 1 message and its 2 images", res)
	}
	if media, err := db.MessageMedia(ctx, m.ID, false); err != nil || len(media) != 0 {
		t.Errorf("media of the pruned message: %+v, %v", media, err)
	}
	if media, err := db.MessageMedia(ctx, other.ID, false); err != nil || len(media) != 1 {
		t.Errorf("media of the kept message: %+v, %v", media, err)
	}
}
