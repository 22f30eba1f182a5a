package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// TestPerBotVision: llm.vision is false for all but the bot whose own llm
// section turns it on with a vision model. The same image to each: the
// vision bot's model gets it as a data URL; the other bot's user gets
// replies.text_only, its model is not asked and nothing is downloaded.
func TestPerBotVision(t *testing.T) {
	const (
		hrAgent  = 1000003
		hrSecret = "hr-app-secret-never-shown"
	)
	png := append([]byte("\x89PNG\r\n\x1a\n"), "a tiny screenshot"...)
	sim := wecomsim.New(wecomsim.Options{Apps: []wecomsim.App{
		{CorpID: testCorp, AgentID: testAgent, Secret: testSecret}, {CorpID: testCorp, AgentID: hrAgent, Secret: hrSecret},
	}})
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)
	fake := llmtest.New(func(r llmtest.Request) llmtest.Reply {
		last := r.Messages[len(r.Messages)-1]
		return llmtest.Reply{Content: fmt.Sprintf("model=%s images=%d text=%s", r.Model, len(last.Images), last.Content)}
	})
	llmSrv := httptest.NewServer(fake.Handler())
	t.Cleanup(func() { fake.Close(); llmSrv.Close() })

	aesKey := wecomsim.NewEncodingAESKey()
	yml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", shutdown_timeout: 5s}
storage: {driver: sqlite, dsn: %q}
wecom: {api_base: %q}
llm: {base_url: %q, api_key: sk-test, model: text-model, vision: false, timeout: 5s, retries: 0}
replies: {text_only: "请用文字描述。", image_prompt: "图里是什么？"}
admin: {username: admin, password: %q}
log: {level: error}
bots:
  - name: helpdesk
    corp_id: %q
    agent_id: %d
    secret: %q
    token: %q
    encoding_aes_key: %q
    llm: {vision: true, model: vl-model}
  - {name: hr, corp_id: %[5]q, agent_id: %[10]d, secret: %[11]q, token: %[8]q, encoding_aes_key: %[9]q}
`, filepath.Join(t.TempDir(), "wecombot.db"), simSrv.URL, llmSrv.URL+"/v1", testAdminPW,
		testCorp, testAgent, testSecret, testToken, aesKey, hrAgent, hrSecret)
	m := openMain(t, yml, nil)

	image := func(bot string, agent, msgID int64) {
		t.Helper()
		sim.PutMedia("media_image_"+strconv.FormatInt(msgID, 10), png)
		cb := &wecomsim.Callback{URL: "http://" + m.Addr + "/wecom/" + bot + "/callback", Token: testToken, EncodingAESKey: aesKey, CorpID: testCorp}
		status, body, err := cb.Post(context.Background(), wecomsim.MediaXML(testCorp, "alice", "image", msgID, time.Now().Unix(), agent))
		if err != nil || status != http.StatusOK || body != "" {
			t.Fatalf("callback of %s: %d %q %v", bot, status, body, err)
		}
	}
	image("helpdesk", testAgent, 7460000000000000001)
	image("hr", hrAgent, 7460000000000000002)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sent, err := sim.WaitDelivered(ctx, 2)
	if err != nil {
		t.Fatalf("waiting for 2 delivered messages (have %d): %v", len(sim.Delivered()), err)
	}
	got := map[int64]string{}
	for _, s := range sent {
		got[s.AgentID] = s.Content
	}
	if want := "model=vl-model images=1 text=图里是什么？"; got[testAgent] != want {
		t.Errorf("helpdesk answered %q, want %q", got[testAgent], want)
	}
	if got[hrAgent] != "请用文字描述。" {
		t.Errorf("hr answered %q, want replies.text_only", got[hrAgent])
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Model != "vl-model" {
		t.Fatalf("the model was asked %d times (%+v), want once, by helpdesk's vl-model", len(reqs), reqs)
	}
	last := reqs[0].Messages[len(reqs[0].Messages)-1]
	if want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(png); len(last.Images) != 1 || last.Images[0] != want {
		t.Errorf("helpdesk's model got the images %.80q, want the exact bytes as a data URL", last.Images)
	}
	if n := sim.MediaGets(); n != 1 {
		t.Errorf("media/get asked %d times, want once (helpdesk's image; none for hr)", n)
	}
	if strings.Contains(fmt.Sprint(reqs), "text-model") {
		t.Error("hr's model was asked")
	}
}

// TestBotKeyName: the hints of a model whose key is a bot's own name that
// bot's key; the others the llm section's.
func TestBotKeyName(t *testing.T) {
	yml := fmt.Sprintf(`
storage: {dsn: x.db}
llm: {base_url: "https://api.example.com/v1", api_key: sk-a, model: model-a}
admin: {password: pw}
bots:
  - {name: helpdesk, corp_id: %[1]q, agent_id: 1, secret: s, token: t, encoding_aes_key: %[2]q, llm: {model: model-b}}
  - {name: hr, corp_id: %[1]q, agent_id: 2, secret: s, token: t, encoding_aes_key: %[2]q, llm: {api_key: sk-b}}
`, testCorp, wecomsim.NewEncodingAESKey())
	cfg, err := ParseConfig([]byte(yml), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	models := botModels(cfg, nil)
	if ep := models["helpdesk"].Endpoint; ep == nil || ep.KeyName != "" {
		t.Errorf("helpdesk's endpoint %+v, want its own with the llm section's key", ep)
	}
	if ep := models["hr"].Endpoint; ep == nil || ep.KeyName != "bots[1] (hr).llm.api_key" {
		t.Errorf("hr's endpoint %+v, want its key named bots[1] (hr).llm.api_key", ep)
	}
	// The panel's Messages page names it too.
	if rows := botModelRows(cfg, false); len(rows) != 2 || rows[0].KeyName != "" || rows[1].KeyName != "bots[1] (hr).llm.api_key" {
		t.Errorf("panel rows %+v, want hr's key named", rows)
	}
}
