package llm

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// EchoModel names Echo where a model's name is shown.
const EchoModel = "offline echo model"

// Echo is the offline demo model: it answers deterministically, says that
// it is a demo, and needs no key or network.
type Echo struct {
	// Pace, when set, makes Stream send the answer in echoPieces pieces
	// this far apart, so that the demo's AI bot shows its stream growing
	// as a real model's would. Complete never waits.
	Pace time.Duration
}

// echoPieces is how many pieces a paced Stream sends.
const echoPieces = 4

// Complete answers the last user message; an image in it with its type
// and size ("image/png, 1234 bytes"), so the demo shows the path of
// images without a model.
func (Echo) Complete(_ context.Context, msgs []Message) (string, error) {
	m, err := last(msgs)
	if err != nil {
		return "", err
	}
	last := m.Content
	for _, img := range m.Images {
		if last != "" {
			last += " "
		}
		last += "[" + img.MIME + ", " + strconv.Itoa(len(img.Data)) + " bytes]"
	}
	turns := 0
	for _, m := range msgs {
		if m.Role == RoleUser {
			turns++
		}
	}
	var b strings.Builder
	b.WriteString("【演示模型 / demo model】你说：")
	b.WriteString(last)
	b.WriteString("\n（第 ")
	b.WriteString(strconv.Itoa(turns))
	b.WriteString(" 轮，共 ")
	b.WriteString(strconv.Itoa(utf8.RuneCountInString(last)))
	b.WriteString(" 个字符。设置 OPENAI_API_KEY 即可使用真实模型。）")
	return b.String(), nil
}
