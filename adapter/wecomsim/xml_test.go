package wecomsim

import (
	"context"
	"net/http"
	"testing"
)

func TestEventAndMediaXML(t *testing.T) {
	cb, rc, _ := newCallback(t)
	msgs := [][]byte{
		EventXML(corpID, "zhangsan", "enter_agent", 1740819600, agentID),
		MediaXML(corpID, "zhangsan", "image", 11, 1740819601, agentID),
		MediaXML(corpID, "zhangsan", "voice", 12, 1740819602, agentID),
		MediaXML(corpID, "zhangsan", "video", 13, 1740819603, agentID),
		MediaXML(corpID, "zhangsan", "file", 14, 1740819604, agentID),
	}
	for _, m := range msgs {
		if status, body, err := cb.Post(context.Background(), m); err != nil || status != http.StatusOK {
			t.Fatalf("Post: %d %q %v", status, body, err)
		}
	}
	ev := parse(t, rc.plains[0])
	if ev.MsgType != "event" || ev.Event != "enter_agent" || ev.MsgId != 0 || ev.AgentID != agentID {
		t.Errorf("event: %+v", ev)
	}
	img := parse(t, rc.plains[1])
	if img.MsgType != "image" || img.MediaId == "" || img.PicUrl == "" || img.MsgId != 11 {
		t.Errorf("image: %+v", img)
	}
	if v := parse(t, rc.plains[2]); v.Format != "amr" || v.MediaId == "" {
		t.Errorf("voice: %+v", v)
	}
	if v := parse(t, rc.plains[3]); v.ThumbMediaId == "" || v.MediaId == "" {
		t.Errorf("video: %+v", v)
	}
	if f := parse(t, rc.plains[4]); f.MsgType != "file" || f.MediaId == "" {
		t.Errorf("file: %+v", f)
	}
	first, again := MediaXML(corpID, "u", "image", 1, 2, 3), MediaXML(corpID, "u", "image", 1, 2, 3)
	if string(first) != string(again) {
		t.Error("MediaXML is not deterministic")
	}
}
