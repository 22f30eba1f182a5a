package kf

import (
	"errors"
	"fmt"
	"testing"
)

// TestErrorClassification follows KF.md §10: token errors are refreshed and
// replayed, configuration errors stop, 95001/95002/95018/95013/40096 are
// permanent, 95007 retries with a newer Token, and nothing else is
// classified (busy, rate limits and HTTP errors are transient).
func TestErrorClassification(t *testing.T) {
	type class struct{ token, config, msgToken, permanent, handedOver, overBudget, window, duplicate bool }
	tests := []struct {
		code int
		want class
	}{
		{40014, class{token: true}},
		{42001, class{token: true}},
		{41001, class{token: true}},
		{60020, class{config: true}},
		{48002, class{config: true}},
		{95017, class{config: true}},
		{95011, class{config: true}},
		{95012, class{config: true}},
		{95000, class{config: true}},
		{95004, class{config: true}},
		{95007, class{msgToken: true}},
		{95001, class{permanent: true, overBudget: true}},
		{95002, class{permanent: true, window: true}},
		{95018, class{permanent: true, handedOver: true}},
		{95013, class{permanent: true}},
		{40096, class{permanent: true}},
		{44004, class{permanent: true}},
		{95033, class{duplicate: true}},
		{-1, class{}},
		{45009, class{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			// Wrapped, as the caller's layers will wrap it.
			err := fmt.Errorf("outbox: part 3: %w", &Error{API: "kf/send_msg", Code: tt.code, Msg: "x"})
			got := class{TokenRejected(err), ConfigError(err), MsgTokenExpired(err), Permanent(err),
				HandedOver(err), OverBudget(err), OutsideWindow(err), DuplicateMsgID(err)}
			if got != tt.want {
				t.Errorf("classes = %+v, want %+v", got, tt.want)
			}
			if tt.code != -1 && tt.code != 45009 && Hint(err) == "" {
				t.Error("no hint")
			}
		})
	}
	for _, err := range []error{nil, errors.New("x"), &HTTPError{API: "kf/send_msg", Status: 502}} {
		if TokenRejected(err) || ConfigError(err) || Permanent(err) || MsgTokenExpired(err) || Hint(err) != "" {
			t.Errorf("%v is classified", err)
		}
	}
}

func TestHintOf(t *testing.T) {
	stored := (&Error{API: "kf/sync_msg", Code: CodeIPNotTrusted, Msg: "not allow to access from your ip"}).Error()
	if got, want := HintOf("adapter: "+stored), Hint(&Error{Code: CodeIPNotTrusted}); got != want || got == "" {
		t.Errorf("HintOf(%q) = %q, want %q", stored, got, want)
	}
	for _, text := range []string{"", "kf: kf/sync_msg: HTTP status 502", "errcode x: y", "kf: kf/sync_msg: errcode 45009: busy"} {
		if got := HintOf(text); got != "" {
			t.Errorf("HintOf(%q) = %q, want none", text, got)
		}
	}
}
