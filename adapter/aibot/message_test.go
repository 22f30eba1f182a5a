package aibot

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "messages", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseSamples reads every real-shaped sample of AIBOT.md (§2.3–2.5,
// §3.3) and checks what the pipeline gets from it (edge case 12).
func TestParseSamples(t *testing.T) {
	tests := []struct {
		file         string
		msgType      string
		known        bool
		group        bool
		conversation string
		sender       string
		prompt       string
		ok           bool
		check        func(t *testing.T, m Message)
	}{
		{file: "text_group.json", msgType: TypeText, known: true, group: true, conversation: "CHATID", sender: "USERID",
			prompt: "> 这是今日的测试情况\n\nhello robot", ok: true,
			check: func(t *testing.T, m Message) {
				if m.MsgID != "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=" || m.ResponseURL != "RESPONSEURL" || m.AIBotID != "AIBOTID" {
					t.Errorf("fields: %+v", m)
				}
			}},
		{file: "text_group_cjk.json", msgType: TypeText, known: true, group: true, conversation: "wrkSFfCgAAxxxx", sender: "lisi",
			prompt: "明天广州天气怎么样？", ok: true},
		{file: "text_single.json", msgType: TypeText, known: true, conversation: "zhangsan", sender: "zhangsan", prompt: "hello", ok: true},
		{file: "image.json", msgType: TypeImage, known: true, conversation: "zhangsan", sender: "zhangsan",
			check: func(t *testing.T, m Message) {
				if m.Image == nil || m.Image.AESKey == "" || m.Image.URL == "" {
					t.Errorf("image: %+v", m.Image)
				}
			}},
		{file: "mixed_two_images.json", msgType: TypeMixed, known: true, group: true, conversation: "CHATID", sender: "USERID",
			prompt: "这两张图\n有什么不同？", ok: true,
			check: func(t *testing.T, m Message) {
				if len(m.Mixed.Items) != 4 || m.Mixed.Items[2].Image.URL != "URL2" {
					t.Errorf("mixed: %+v", m.Mixed)
				}
			}},
		{file: "voice.json", msgType: TypeVoice, known: true, conversation: "zhangsan", sender: "zhangsan", prompt: "今天天气怎么样", ok: true},
		{file: "file.json", msgType: TypeFile, known: true, conversation: "zhangsan", sender: "zhangsan"},
		{file: "video.json", msgType: TypeVideo, known: true, conversation: "zhangsan", sender: "zhangsan",
			check: func(t *testing.T, m Message) {
				if m.Video == nil || m.Video.AESKey != "AESKEY" {
					t.Errorf("video: %+v", m.Video)
				}
			}},
		{file: "quote_image.json", msgType: TypeText, known: true, group: true, conversation: "CHATID", sender: "USERID",
			prompt: "> [image]\n\n这张图里是什么", ok: true},
		{file: "stream_refresh.json", msgType: TypeStream, known: true, group: true, conversation: "CHATID", sender: "USERID",
			check: func(t *testing.T, m Message) {
				if m.Stream.ID != "STREAMID" {
					t.Errorf("stream: %+v", m.Stream)
				}
			}},
		{file: "enter_chat.json", msgType: TypeEvent, known: true, conversation: "USERID", sender: "USERID",
			check: func(t *testing.T, m Message) {
				if m.Event.EventType != EventEnterChat || m.From.CorpID != "wpxxxx" || m.CreateTime != 1700000000 {
					t.Errorf("event: %+v %+v", m.Event, m.From)
				}
			}},
		{file: "feedback_event.json", msgType: TypeEvent, known: true, conversation: "USERID", sender: "USERID",
			check: func(t *testing.T, m Message) {
				want := &Feedback{ID: "FEEDBACKID", Type: FeedbackInaccurate, Content: "答非所问", InaccurateReasons: []int{1, 3}}
				if !reflect.DeepEqual(m.Event.Feedback, want) {
					t.Errorf("feedback = %+v, want %+v", m.Event.Feedback, want)
				}
			}},
		{file: "template_card_event.json", msgType: TypeEvent, known: true, group: true, conversation: "CHATID", sender: "USERID",
			check: func(t *testing.T, m Message) {
				want := &TemplateCardEvent{CardType: "vote_interaction", EventKey: "submit_key", TaskID: "task_01",
					SelectedItems: []SelectedItem{{QuestionKey: "q1", OptionIDs: []string{"o1", "o2"}}}}
				if !reflect.DeepEqual(m.Event.TemplateCard, want) || m.ResponseURL == "" {
					t.Errorf("card = %+v, want %+v", m.Event.TemplateCard, want)
				}
			}},
		{file: "template_card_event_nounderscore.json", msgType: TypeEvent, known: true, conversation: "USERID", sender: "USERID",
			check: func(t *testing.T, m Message) {
				c := m.Event.TemplateCard
				if c.CardType != "button_interaction" || c.EventKey != "btn_ok" || c.TaskID != "task_02" {
					t.Errorf("card = %+v", c)
				}
			}},
		{file: "disconnected_event.json", msgType: TypeEvent, known: true},
		{file: "unknown_type.json", msgType: "location", known: false, conversation: "zhangsan", sender: "zhangsan"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m, err := ParseMessage(readSample(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if m.MsgType != tt.msgType || m.Known() != tt.known || m.IsGroup() != tt.group ||
				m.Conversation() != tt.conversation || m.Sender() != tt.sender {
				t.Errorf("type %q known %v group %v conversation %q sender %q; want %q %v %v %q %q",
					m.MsgType, m.Known(), m.IsGroup(), m.Conversation(), m.Sender(),
					tt.msgType, tt.known, tt.group, tt.conversation, tt.sender)
			}
			prompt, ok := m.Prompt()
			if prompt != tt.prompt || ok != tt.ok {
				t.Errorf("Prompt() = %q, %v; want %q, %v", prompt, ok, tt.prompt, tt.ok)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestParseMessageRefuses(t *testing.T) {
	tests := []struct {
		name, body string
	}{
		{"not json", `hello`},
		{"truncated", `{"msgid":"1","msgtype":"text"`},
		{"array", `[{"msgid":"1","msgtype":"text"}]`},
		{"null", `null`},
		{"empty", ``},
		{"wrong field type", `{"msgid":"1","msgtype":"text","text":{"content":5}}`},
		{"no msgtype", `{"msgid":"1","text":{"content":"hi"}}`},
		{"empty msgtype", `{"msgid":"1","msgtype":"","text":{"content":"hi"}}`},
		{"no msgid", `{"msgtype":"text","text":{"content":"hi"}}`},
		{"no msgid, unknown type", `{"msgtype":"location"}`},
		{"event without msgid", `{"msgtype":"event","event":{"eventtype":"enter_chat"}}`},
		{"event without eventtype", `{"msgid":"1","msgtype":"event","event":{}}`},
		{"event without body", `{"msgid":"1","msgtype":"event"}`},
		{"stream without id", `{"msgid":"1","msgtype":"stream","stream":{}}`},
		{"stream without body", `{"msgid":"1","msgtype":"stream"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMessage([]byte(tt.body))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseMessage = %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

// A refresh and a disconnected_event need no msgid: neither is deduped.
func TestParseMessageWithoutMsgID(t *testing.T) {
	for _, body := range []string{
		`{"msgtype":"stream","stream":{"id":"s-1"}}`,
		`{"aibotid":"A","msgtype":"event","event":{"eventtype":"disconnected_event"}}`,
	} {
		if _, err := ParseMessage([]byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}

func TestPrompt(t *testing.T) {
	text := func(chatType, content string) Message {
		return Message{MsgID: "1", ChatType: chatType, MsgType: TypeText, Text: &Text{Content: content}}
	}
	withQuote := func(m Message, q *Quote) Message { m.Quote = q; return m }
	tests := []struct {
		name   string
		m      Message
		prompt string
		ok     bool
	}{
		{"single keeps a leading @", text(ChatSingle, "@everyone hello"), "@everyone hello", true},
		{"group strips", text(ChatGroup, "@RobotA hello robot"), "hello robot", true},
		{"group strips CJK name and U+2005", text(ChatGroup, "@智能助手\u2005帮我写一首诗"), "帮我写一首诗", true},
		{"group strips after leading space", text(ChatGroup, "  @小助手  你好\n第二行"), "你好\n第二行", true},
		{"group, mention only", text(ChatGroup, "@小助手"), "", false},
		{"group, mention and space only", text(ChatGroup, "@小助手\u2005 "), "", false},
		{"group, only the first mention", text(ChatGroup, "@Bot @alice 你觉得呢"), "@alice 你觉得呢", true},
		{"group without mention", text(ChatGroup, "hello"), "hello", true},
		{"group, lone @", text(ChatGroup, "@ hello"), "@ hello", true},
		{"blank", text(ChatSingle, " \n\t"), "", false},
		{"text without body", Message{MsgID: "1", MsgType: TypeText}, "", false},
		{"multi-line quote", withQuote(text(ChatSingle, "总结一下"), &Quote{MsgType: TypeText, Text: &Text{Content: "第一行\n第二行"}}),
			"> 第一行\n> 第二行\n\n总结一下", true},
		{"quote of voice", withQuote(text(ChatSingle, "对吗"), &Quote{MsgType: TypeVoice, Voice: &Voice{Content: "明天下雨"}}),
			"> 明天下雨\n\n对吗", true},
		{"quote of mixed", withQuote(text(ChatSingle, "?"), &Quote{MsgType: TypeMixed, Mixed: &Mixed{Items: []MixedItem{
			{MsgType: TypeText, Text: &Text{Content: "看这个"}}, {MsgType: TypeImage, Image: &Media{URL: "u"}}}}}),
			"> 看这个\n\n?", true},
		{"quote of images only", withQuote(text(ChatSingle, "?"), &Quote{MsgType: TypeMixed, Mixed: &Mixed{Items: []MixedItem{
			{MsgType: TypeImage, Image: &Media{URL: "u"}}}}}), "> [image]\n\n?", true},
		{"quote of file", withQuote(text(ChatSingle, "读一下"), &Quote{MsgType: TypeFile, File: &Media{URL: "u"}}), "> [file]\n\n读一下", true},
		{"quote alone is no question", withQuote(text(ChatGroup, "@Bot"), &Quote{MsgType: TypeText, Text: &Text{Content: "x"}}), "", false},
		{"mixed of images only", Message{MsgType: TypeMixed, Mixed: &Mixed{Items: []MixedItem{
			{MsgType: TypeImage, Image: &Media{URL: "1"}}, {MsgType: TypeImage, Image: &Media{URL: "2"}}}}}, "", false},
		{"image", Message{MsgType: TypeImage, Image: &Media{URL: "u"}}, "", false},
		{"video", Message{MsgType: TypeVideo, Video: &Media{URL: "u"}}, "", false},
		{"event", Message{MsgType: TypeEvent, Event: &Event{EventType: EventEnterChat}}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prompt, ok := tt.m.Prompt()
			if prompt != tt.prompt || ok != tt.ok {
				t.Errorf("Prompt() = %q, %v; want %q, %v", prompt, ok, tt.prompt, tt.ok)
			}
		})
	}
}

func TestKnownWithoutEvent(t *testing.T) {
	if (Message{MsgType: TypeEvent}).Known() {
		t.Error("an event without body is known")
	}
}
