package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/wecombot/wecombot/llm/llmtest"
)

// TestModelFailureVisibleWithinOneMessage: one message to a model that
// refuses the key shows the failure in /api/bots (with the hint, never the
// key) and in /metrics; the next answered message shows it ok.
func TestModelFailureVisibleWithinOneMessage(t *testing.T) {
	e := newEnv(t, func(llmtest.Request) llmtest.Reply {
		// The worst provider: it echoes the key it refuses.
		return llmtest.Reply{Status: http.StatusUnauthorized, Content: "Incorrect API key provided: sk-test-key."}
	})
	base := "http://" + e.m.Addr
	get := func(path string, auth bool) string {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth {
			req.SetBasicAuth("admin", testAdminPW)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "sk-test-key") {
			t.Fatalf("GET %s shows the model's key:\n%s", path, body)
		}
		return string(body)
	}
	model := func() map[string]any {
		t.Helper()
		var out struct {
			Bots []struct {
				LLM map[string]any `json:"llm"`
			} `json:"bots"`
		}
		body := get("/api/bots", true)
		if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Bots) != 1 {
			t.Fatalf("/api/bots: %v\n%s", err, body)
		}
		return out.Bots[0].LLM
	}
	if m := model(); m["state"] != "unknown" || m["model"] != "test-model" || m["last_ok_at"] != nil {
		t.Fatalf("before any message: llm %v", m)
	}

	e.post(e.text("zhangsan", "你好"))
	e.waitDelivered(1) // the failure notice
	m := model()
	if m["state"] != "failing" || !strings.Contains(m["hint"].(string), "llm.api_key") ||
		!strings.Contains(m["last_error"].(string), "status 401") || m["last_ok_at"] != nil {
		t.Fatalf("after a refused key: llm %v, want failing with the key's hint", m)
	}
	metrics := get("/metrics", false)
	for _, want := range []string{
		`wecombot_messages_total{bot="helpdesk",result="received"} 1`,
		`wecombot_messages_total{bot="helpdesk",result="failed"} 1`,
		`wecombot_llm_requests_total{bot="helpdesk",result="config_error"} 1`,
		`wecombot_llm_request_duration_seconds_count{bot="helpdesk"} 1`,
		"\nwecombot_flood 0\n", // one message: no flood
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !regexp.MustCompile(`(?m)^wecombot_outbox_pending [01]$`).MatchString(metrics) {
		t.Errorf("/metrics has no wecombot_outbox_pending for the one notice")
	}

	e.llm.SetRespond(respond)
	e.post(e.text("zhangsan", "again"))
	e.waitDelivered(2)
	if m := model(); m["state"] != "ok" || m["last_ok_at"] == nil {
		t.Fatalf("after an answer: llm %v, want ok with when", m)
	}
}
