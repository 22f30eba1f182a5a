// Package config holds the value types that the configuration file's
// sections share across packages, so that a section can be decoded straight
// into the struct of the component that reads it. It knows no section and no
// key: which keys exist, their defaults and their checks are cmd/wecombot's.
package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as Go writes one ("90s", "5m",
// "24h"; "0" too). It is decoded once, from the file, and components read
// it as time.Duration(d).
type Duration time.Duration

// UnmarshalYAML parses a scalar. A value that is not a duration is
// reported as a *yaml.TypeError, so that the decoder goes on and every
// problem of the file is reported together; its text starts with the
// value's position (ValueError), for the caller to name the key.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return ValueError(n, "is not a duration (examples: 90s, 5m, 24h)")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return ValueError(n, "%q is not a duration (examples: 90s, 5m, 24h)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as String does, so that the file shown back reads
// as it was written.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String is time.Duration's form without its trailing zero units: "5m"
// rather than "5m0s", "720h" rather than "720h0m0s", and "0" (as the
// documentation writes "0 keeps everything").
func (d Duration) String() string {
	if d == 0 {
		return "0"
	}
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ValueError is a problem of the value at n, as a *yaml.TypeError (the kind
// of error that lets yaml.v3 go on decoding) whose text starts with the
// value's line and column: "line 12 column 12: …". Position takes them off
// again.
func ValueError(n *yaml.Node, format string, args ...any) error {
	msg := fmt.Sprintf("line %d column %d: ", n.Line, n.Column) + fmt.Sprintf(format, args...)
	return &yaml.TypeError{Errors: []string{msg}}
}

var position = regexp.MustCompile(`^line (\d+) column (\d+): `)

// Position splits a problem that ValueError wrote into the value's line and
// column and what is wrong; ok is false for any other text (yaml.v3's own
// problems).
func Position(problem string) (line, column int, msg string, ok bool) {
	m := position.FindStringSubmatch(problem)
	if m == nil {
		return 0, 0, problem, false
	}
	line, _ = strconv.Atoi(m[1])
	column, _ = strconv.Atoi(m[2])
	return line, column, problem[len(m[0]):], true
}
