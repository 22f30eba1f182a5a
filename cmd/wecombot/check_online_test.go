package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/llm/llmtest"
)

// The model's key in the online tests; never printed either.
const onlineKey = "sk-online-key-never-echoed"

// onlineEnv is what `check -online` talks to: the WeCom simulator, with
// goodYAML's app and the websocket AI bot of the kind tests, and the fake
// model, taking onlineKey only.
type onlineEnv struct {
	sim      *wecomsim.Server
	model    *llmtest.Server
	simURL   string
	modelURL string
}

func newOnlineEnv(t *testing.T) *onlineEnv {
	t.Helper()
	e := &onlineEnv{
		sim: wecomsim.New(wecomsim.Options{
			Apps:   []wecomsim.App{{CorpID: "wwcfgcorp", AgentID: 1000002, Secret: cfgSecret}},
			AIBots: []wecomsim.AIBot{{BotID: cfgBotID, Secret: cfgWSSecret}},
		}),
		model: llmtest.New(nil),
	}
	e.model.RequireKey(onlineKey)
	sim := httptest.NewServer(e.sim.Handler())
	model := httptest.NewServer(e.model.Handler())
	t.Cleanup(func() { e.model.Close(); model.Close(); sim.Close() })
	e.simURL, e.modelURL = sim.URL, model.URL
	return e
}

// yaml is goodYAML pointed at the simulator (wecom.simulator: true, as
// for `wecombot simulate`) and the fake model, with an AI bot in each
// mode besides the app.
func (e *onlineEnv) yaml() string {
	yml := edit(goodYAML, "api_base:",
		`api_base: "`+e.simURL+`"`,
		`aibot_ws_url: "ws`+strings.TrimPrefix(e.simURL, "http")+wecomsim.AIBotWSPath+`"`,
		"simulator: true")
	yml = edit(yml, "api_key:", `api_key: "`+onlineKey+`"`, `base_url: "`+e.modelURL+`/v1"`)
	for _, b := range []struct {
		name string
		keys []string
	}{{"assistant", aibotWS}, {"front", aibotCallback}} {
		yml += "  - name: " + b.name + "\n    " + strings.Join(b.keys, "\n    ") + "\n"
	}
	return yml
}

// checkOnline runs `check -online` on yml and fails the test if its
// output holds any secret it was given.
func (e *onlineEnv) checkOnline(t *testing.T, yml string, secrets ...string) (code int, stdout, stderr string) {
	t.Helper()
	code, stdout, stderr = runCmd(t, "check", "-online", "-subscribe", "-config", writeConfig(t, yml))
	secrets = append(secrets, cfgSecret, cfgWSSecret, onlineKey, e.sim.CurrentToken(1000002))
	for _, s := range secrets {
		if s != "" && strings.Contains(stdout+stderr, s) {
			t.Errorf("the output holds the secret %q:\n%s%s", s, stdout, stderr)
		}
	}
	return code, stdout, stderr
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("output lacks %q:\n%s", l, out)
		}
	}
}

func TestCheckOnline(t *testing.T) {
	t.Run("all good", func(t *testing.T) {
		e := newOnlineEnv(t)
		code, stdout, stderr := e.checkOnline(t, e.yaml())
		if code != 0 || strings.Contains(stdout, "FAILED") {
			t.Fatalf("check -online = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		wantLines(t, stdout,
			"configuration OK (3 bot(s))",
			"  bot helpdesk (app): gettoken: ok\n",
			"  bot assistant (AI bot, websocket): subscribe: ok\n",
			"  bot front (AI bot, callback): nothing to check online; WeCom checks the URL when you save it\n",
			"  model gpt-4o-mini at "+e.modelURL+"/v1 (bots helpdesk, assistant, front): one-token chat completion: ok\n",
			"online checks OK")
		wantLines(t, stderr, "bots[1] (assistant): the subscribe takes the long connection")
		if n := e.sim.TokenFetches(1000002); n != 1 {
			t.Errorf("gettoken calls = %d, want 1", n)
		}
		if n := e.sim.AIBotSubscribes(cfgBotID); n != 1 {
			t.Errorf("subscribes = %d, want 1", n)
		}
		if reqs := e.model.Requests(); len(reqs) != 1 || reqs[0].Model != "gpt-4o-mini" || reqs[0].Stream {
			t.Errorf("model requests %+v, want one plain call", reqs)
		}
	})

	// Without -subscribe a running service keeps its connection.
	t.Run("no subscribe unless asked", func(t *testing.T) {
		e := newOnlineEnv(t)
		code, stdout, stderr := runCmd(t, "check", "-online", "-config", writeConfig(t, e.yaml()))
		if code != 0 {
			t.Fatalf("check -online = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		wantLines(t, stdout, "  bot assistant (AI bot, websocket): not probed: a subscribe would take the long connection", "online checks OK")
		if n := e.sim.AIBotSubscribes(cfgBotID); n != 0 {
			t.Errorf("subscribes = %d, want 0", n)
		}
	})

	// A wrong secret fails its own bot's line only.
	for _, tt := range []struct {
		name, secret, wrong string
		lines               []string
	}{
		{"a wrong app secret", cfgSecret, "wrong-app-secret-never-echoed", []string{
			"  bot helpdesk (app): gettoken: FAILED: wecom: gettoken: errcode 40001",
			"    hint: The app secret is wrong",
			"  bot assistant (AI bot, websocket): subscribe: ok\n",
		}},
		{"a wrong AI bot secret", cfgWSSecret, "wrong-ws-secret-never-echoed", []string{
			"  bot assistant (AI bot, websocket): subscribe: FAILED: aibot: aibot_subscribe",
			"errcode 40001",
			"    hint: WeCom refused the bot_id or secret",
			"  bot helpdesk (app): gettoken: ok\n",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newOnlineEnv(t)
			code, stdout, _ := e.checkOnline(t, strings.Replace(e.yaml(), tt.secret, tt.wrong, 1), tt.wrong)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			wantLines(t, stdout, append(tt.lines, "one-token chat completion: ok\n")...)
		})
	}

	t.Run("the model refuses the key and echoes it", func(t *testing.T) {
		e := newOnlineEnv(t)
		e.model.RequireKey("")
		e.model.SetRespond(func(llmtest.Request) llmtest.Reply {
			return llmtest.Reply{Status: http.StatusUnauthorized, Content: "Incorrect API key provided: " + onlineKey + "."}
		})
		code, stdout, stderr := e.checkOnline(t, e.yaml())
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantLines(t, stdout,
			"one-token chat completion: FAILED: llm: probe: status 401: Incorrect API key provided: ******.",
			"    hint: the model API refused the key: check llm.api_key",
			"  bot helpdesk (app): gettoken: ok\n")
		wantLines(t, stderr, "1 online check(s) failed")
	})

	t.Run("the model cannot be reached", func(t *testing.T) {
		e := newOnlineEnv(t)
		dead := httptest.NewServer(nil)
		dead.Close()
		code, stdout, _ := e.checkOnline(t, strings.Replace(e.yaml(), e.modelURL, dead.URL, 1))
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantLines(t, stdout,
			"one-token chat completion: FAILED: llm: probe:",
			"    hint: the model API cannot be reached: check llm.base_url")
	})

	t.Run("offline problems: nothing goes online", func(t *testing.T) {
		e := newOnlineEnv(t)
		code, stdout, stderr := e.checkOnline(t, edit(e.yaml(), "password:", `password: ""`))
		if code != 1 || strings.Contains(stdout, "online") {
			t.Errorf("check -online = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		wantLines(t, stderr, "admin.password: is empty")
		if n, s, m := e.sim.TotalTokenFetches(), e.sim.AIBotSubscribes(cfgBotID), e.model.Calls(); n+s+m != 0 {
			t.Errorf("went online anyway: %d gettoken, %d subscribes, %d model calls", n, s, m)
		}
	})
}

// TestCheckOnlinePerBotModels: each model endpoint is called once, named
// with the bots calling it; a bot's own key that the model refuses fails
// that endpoint only, the key masked.
func TestCheckOnlinePerBotModels(t *testing.T) {
	const wrongKey = "sk-front-wrong-key-never-echoed"
	e := newOnlineEnv(t)
	yml := e.yaml() + "    llm: {api_key: \"" + wrongKey + "\", model: other-model, system_prompt: \"Front desk.\"}\n"
	code, stdout, _ := e.checkOnline(t, yml, wrongKey)
	if code != 1 {
		t.Fatalf("check -online = %d, want 1:\n%s", code, stdout)
	}
	wantLines(t, stdout,
		"  model gpt-4o-mini at "+e.modelURL+"/v1 (bots helpdesk, assistant): one-token chat completion: ok\n",
		"  model other-model at "+e.modelURL+"/v1 (bot front): one-token chat completion: FAILED: llm: probe: status 401: Incorrect API key provided",
		"    hint: the model API refused the key: check bots[2] (front).llm.api_key\n")
	// The refused call is counted, not recorded.
	if rs, n := e.model.Requests(), e.model.Calls(); len(rs) != 1 || rs[0].Model != "gpt-4o-mini" || n != 2 {
		t.Errorf("the model was called %d times (%+v accepted), want once per endpoint", n, rs)
	}
}
