package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
	"github.com/wecombot/wecombot/internal/eventually"
)

func TestDemoAnswersThroughItsOwnSimulator(t *testing.T) {
	d, err := startDemo(context.Background(), demoOptions{
		Addr: "127.0.0.1:0", Getenv: func(string) string { return "" }, Log: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if d.Model != "offline echo model" {
		t.Fatalf("model without a key: %q", d.Model)
	}
	xml := wecomsim.TextXML(demoCorp, "xiaoming", "演示一下", 1, time.Now().Unix(), demoAgent)
	if status, body, err := d.Callback.Post(context.Background(), xml); err != nil || status != 200 || body != "" {
		t.Fatalf("callback: %d %q %v", status, body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent, err := d.Sim.WaitDelivered(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if sent[0].ToUser != "xiaoming" || !strings.Contains(sent[0].Content, "demo model") || !strings.Contains(sent[0].Content, "演示一下") {
		t.Fatalf("answer %+v", sent[0])
	}
	// The service reached the simulator only through api_base: it fetched a token there.
	if d.Sim.TokenFetches(demoAgent) != 1 {
		t.Fatalf("gettoken calls at the simulator: %d", d.Sim.TokenFetches(demoAgent))
	}
}

func TestDemoCommandPrintsThePanelAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // the demo stops when a check fails
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"demo", "-addr", "127.0.0.1:0"}, &stdout, &stderr) }()
	re := regexp.MustCompile(`admin API:\s+curl -u admin:(\S+) (http://\S+)/api/bots`)
	var m []string
	eventually.Within(t, 15*time.Second, func() bool {
		m = re.FindStringSubmatch(stdout.String())
		return m != nil
	}, "no URL printed: %v", later(func() string { return stdout.String() + "\n" + stderr.String() }))
	// The first message the demo sends itself gets its answer and shows up.
	var body string
	eventually.Within(t, 10*time.Second, func() bool {
		req, _ := http.NewRequest("GET", m[2]+"/api/bots", nil)
		req.SetBasicAuth("admin", m[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == 200 && strings.Contains(body, `"state":"valid"`)
	}, "the demo bot has no valid token: %v", later(func() string { return body }))
	if !strings.Contains(body, `"name":"demo"`) || !strings.Contains(body, `"state":"valid"`) {
		t.Fatalf("demo bot: %s", body)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop")
	}
}

// TestDemoConfigurationShowsTheModelItRuns: without a key the demo answers
// with the echo model, and its configuration page says so instead of
// showing a model it never calls; with a key it shows the real one.
func TestDemoConfigurationShowsTheModelItRuns(t *testing.T) {
	for _, key := range []string{"", "SK-DEMO-secret"} {
		d, err := startDemo(context.Background(), demoOptions{
			Addr: "127.0.0.1:0", Log: io.Discard,
			Getenv: func(k string) string {
				if k == "OPENAI_API_KEY" {
					return key
				}
				return ""
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		jar, _ := cookiejar.New(nil)
		p := &panelClient{t: t, base: "http://" + d.Main.Addr, client: &http.Client{Jar: jar}}
		if code, body := p.do(p.client.PostForm(p.base+"/admin/login?lang=en", url.Values{"username": {"admin"}, "password": {d.Password}})); code != http.StatusOK {
			t.Fatalf("login: %d\n%s", code, body)
		}
		_, page := p.get("/admin/config?lang=en")
		echo := []string{`id="echo-model"`, "offline echo model", "model: offline echo model", `api_key: &#34;&#34;`}
		real := []string{"model: gpt-4o-mini", "api_key: &#39;******&#39;"}
		want, not := echo, real
		if key != "" {
			want, not = real, echo
		}
		for _, s := range want {
			if !strings.Contains(page, s) {
				t.Errorf("key %q: the configuration page lacks %q:\n%s", key, s, page)
			}
		}
		for _, s := range not {
			if strings.Contains(page, s) {
				t.Errorf("key %q: the configuration page shows %q:\n%s", key, s, page)
			}
		}
		if strings.Contains(page, "SK-DEMO-secret") {
			t.Error("the configuration page shows the key")
		}
	}
}

// TestDemoAnswersAWeChatCustomer: the demo app's 微信客服 account is wired
// as in production: a customer's message at the simulator is announced to
// the app's callback URL, pulled with kf/sync_msg, answered by the echo
// model and sent with kf/send_msg.
func TestDemoAnswersAWeChatCustomer(t *testing.T) {
	d := startTestDemo(t)
	if kf := d.Main.Config.Bots[0].KF; !kf.Enabled || len(kf.Accounts) != 1 || kf.Accounts[0] != demoKF || kf.Welcome != demoKFWelcome {
		t.Fatalf("the demo app's kf: %+v", kf)
	}
	pulls := d.Sim.KFSyncCalls(demoKF)
	if _, err := d.Sim.KFCustomerWrites(t.Context(), demoKF, "wmDemoCustomer01", "客服演示"); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 15*time.Second, func() bool { return len(d.Sim.KFReceived(demoKF, "wmDemoCustomer01")) > 0 },
		"the customer got no answer")
	got := d.Sim.KFReceived(demoKF, "wmDemoCustomer01")
	if len(got) != 1 || got[0].OnEvent || !strings.Contains(got[0].Content, "demo model") || !strings.Contains(got[0].Content, "客服演示") {
		t.Fatalf("the customer received %+v", got)
	}
	if d.Sim.KFSyncCalls(demoKF) <= pulls {
		t.Fatal("the service answered without pulling with kf/sync_msg")
	}
	// Nothing went to the app's users at message/send.
	if n := d.Sim.DeliveredCount(); n != 0 {
		t.Fatalf("%d messages at message/send", n)
	}
}
