package web

import (
	"strings"
	"testing"
)

func TestConfigPage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	rec := e.get("/admin/config", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, "password: &#39;******&#39;", "The configuration has 1 problem:", "config: llm.model: is empty")
	e.report.Problems = nil
	wantBody(t, e.get("/admin/config", s), `id="check-ok"`, "Configuration OK.")
}

// TestConfigPageEchoModel: a service on the echo model says so at the top
// of the configuration page, in the admin's language; any other does not.
func TestConfigPageEchoModel(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	if strings.Contains(e.get("/admin/config", s).Body.String(), `id="echo-model"`) {
		t.Error("a service on a real model says it runs the echo model")
	}
	e.report.EchoModel = true
	wantBody(t, e.get("/admin/config", s), `<p class="notice" id="echo-model">This demo answers with the offline echo model`)
	wantBody(t, e.do(request{method: "GET", path: "/admin/config", cookie: s, header: map[string]string{"Accept-Language": "zh"}}),
		"本演示使用离线回声模型回复")
}

// TestConfigPageModels: the configuration page lists each bot's model,
// its host, whether a key is set (masked) and the keys it sets itself.
func TestConfigPageModels(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	e.report.Models = []BotModel{
		{Bot: "helpdesk", Model: "gpt-4o", Host: "api.openai.com", KeySet: true, Overrides: []string{"model", "system_prompt"}},
		{Bot: "hr", Model: "qwen-plus", Host: "dashscope.aliyuncs.com"},
	}
	wantBody(t, e.get("/admin/config", s),
		`<tr id="model-of-helpdesk"><td>helpdesk</td><td><code>gpt-4o</code></td><td><code>api.openai.com</code></td><td>******</td><td><code>model</code>, <code>system_prompt</code></td></tr>`,
		`<tr id="model-of-hr"><td>hr</td><td><code>qwen-plus</code></td><td><code>dashscope.aliyuncs.com</code></td><td>—</td><td>—</td></tr>`,
		"Each bot&#39;s model")
}
