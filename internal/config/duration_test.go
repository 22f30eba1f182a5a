package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDurationDecode(t *testing.T) {
	for _, tt := range []struct {
		yml  string
		want time.Duration
	}{
		{"d: 90s", 90 * time.Second},
		{"d: 5m", 5 * time.Minute},
		{`d: "720h"`, 720 * time.Hour},
		{"d: 1h30m", 90 * time.Minute},
		{"d: 0", 0},
		{"d: -1h", -time.Hour},
	} {
		var v struct{ D Duration }
		if err := yaml.Unmarshal([]byte(tt.yml), &v); err != nil {
			t.Errorf("%s: %v", tt.yml, err)
			continue
		}
		if time.Duration(v.D) != tt.want {
			t.Errorf("%s: got %s, want %s", tt.yml, time.Duration(v.D), tt.want)
		}
	}
}

// TestDurationProblems: a bad value is a *yaml.TypeError carrying its
// position, so that decoding goes on to the next problem.
func TestDurationProblems(t *testing.T) {
	yml := "a: 5x\nb: 60\nc: [1s]\nd: 2m\n"
	v := struct{ A, B, C, D Duration }{A: Duration(time.Minute)}
	err := yaml.Unmarshal([]byte(yml), &v)
	te, ok := err.(*yaml.TypeError)
	if !ok {
		t.Fatalf("error %T %v, want a *yaml.TypeError", err, err)
	}
	want := []struct {
		line, column int
		msg          string
	}{
		{1, 4, `"5x" is not a duration (examples: 90s, 5m, 24h)`},
		{2, 4, `"60" is not a duration (examples: 90s, 5m, 24h)`},
		{3, 4, "is not a duration (examples: 90s, 5m, 24h)"},
	}
	if len(te.Errors) != len(want) {
		t.Fatalf("problems %q, want %d", te.Errors, len(want))
	}
	for i, w := range want {
		line, column, msg, ok := Position(te.Errors[i])
		if !ok || line != w.line || column != w.column || msg != w.msg {
			t.Errorf("problem %q: got line %d column %d %q (%v), want %+v", te.Errors[i], line, column, msg, ok, w)
		}
	}
	if v.A != Duration(time.Minute) || v.D != Duration(2*time.Minute) {
		t.Errorf("a bad value replaced the field or stopped the decoding: %+v", v)
	}
	if _, _, msg, ok := Position("line 3: cannot unmarshal !!str `x` into int"); ok || !strings.HasPrefix(msg, "line 3") {
		t.Errorf("yaml.v3's own problem taken for a positioned one")
	}
}

func TestDurationString(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"},
		{90 * time.Second, "1m30s"},
		{5 * time.Minute, "5m"},
		{10 * time.Second, "10s"},
		{720 * time.Hour, "720h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"},
		{500 * time.Millisecond, "500ms"},
		{-time.Hour, "-1h"},
	} {
		if got := Duration(tt.d).String(); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.d, got, tt.want)
		}
		// What is written back reads as the same duration.
		out, err := yaml.Marshal(struct{ D Duration }{Duration(tt.d)})
		var back struct{ D Duration }
		if err != nil || yaml.Unmarshal(out, &back) != nil || time.Duration(back.D) != tt.d {
			t.Errorf("%s: written as %q, read back as %s (%v)", tt.d, out, time.Duration(back.D), err)
		}
	}
}
