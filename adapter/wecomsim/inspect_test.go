package wecomsim

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func (f *fixture) inspect(t *testing.T, method, path string, v any) int {
	t.Helper()
	status, body := f.roundTrip(t, method, path, "")
	if status == http.StatusOK && v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, body)
		}
	}
	return status
}

func TestInspection(t *testing.T) {
	f := newFixture(t, nil)
	var info Info
	if code := f.inspect(t, http.MethodGet, InfoPath, &info); code != http.StatusOK || info != (Info{Simulator: Name}) {
		t.Fatalf("info before any delivery: %d %+v", code, info)
	}
	var list []Delivery
	if code := f.inspect(t, http.MethodGet, DeliveredPath, &list); code != http.StatusOK || list == nil || len(list) != 0 {
		t.Fatalf("nothing delivered: %d %#v, want an empty list", code, list)
	}

	tok := f.token(t)
	f.send(t, tok, text("zhangsan", "one"))
	f.clock.Advance(time.Second)
	f.send(t, tok, text("lisi|wangwu", "two"))
	f.sim.SetInvalidUser("ghost")
	f.send(t, tok, text("ghost|zhaoliu", "three"))

	if f.inspect(t, http.MethodGet, InfoPath, &info); info.Delivered != 4 {
		t.Fatalf("info after 4 deliveries: %+v", info)
	}
	_, b := f.roundTrip(t, http.MethodGet, DeliveredPath, "")
	if raw := string(b); strings.Contains(raw, tok) || strings.Contains(raw, secret) {
		t.Fatalf("the delivered list shows a token or the secret: %s", raw)
	}

	sent := f.sim.Delivered()
	for since, want := range map[string][]Sent{"": sent, "?since=0": sent, "?since=2": sent[2:], "?since=4": nil, "?since=99": nil} {
		list = nil
		if code := f.inspect(t, http.MethodGet, DeliveredPath+since, &list); code != http.StatusOK {
			t.Fatalf("delivered%s: %d", since, code)
		}
		if len(list) != len(want) {
			t.Fatalf("delivered%s: %d deliveries, want %d", since, len(list), len(want))
		}
		for i, d := range list {
			w := want[i]
			if d.ToUser != w.ToUser || d.AgentID != w.AgentID || d.MsgType != w.MsgType || d.Content != w.Content ||
				d.MsgID != w.MsgID || !d.At.Equal(w.At) {
				t.Errorf("delivered%s[%d] = %+v, want %+v", since, i, d, w)
			}
		}
	}
	if n := f.sim.DeliveredCount(); n != len(sent) {
		t.Fatalf("DeliveredCount = %d, want %d", n, len(sent))
	}
	for _, n := range []int{-1, 0, 2, 4, 99} {
		got, want := f.sim.DeliveredSince(n), sent[min(max(n, 0), len(sent)):]
		if !slices.Equal(got, want) {
			t.Errorf("DeliveredSince(%d) = %+v, want %+v", n, got, want)
		}
	}
	if list := f.sim.Delivered(); list[1].At.Sub(list[0].At) != time.Second {
		t.Fatalf("clock: %v %v", list[0].At, list[1].At)
	}

	for _, bad := range []string{"?since=-1", "?since=x"} {
		if code := f.inspect(t, http.MethodGet, DeliveredPath+bad, nil); code != http.StatusBadRequest {
			t.Errorf("delivered%s: %d, want 400", bad, code)
		}
	}
	if code := f.inspect(t, http.MethodPost, InfoPath, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("POST info: %d, want 405", code)
	}
	// Inspecting counts as no API call.
	if f.sim.SendCalls() != 3 || f.sim.TotalTokenFetches() != 1 {
		t.Errorf("API calls counted: send %d, gettoken %d", f.sim.SendCalls(), f.sim.TotalTokenFetches())
	}
}
