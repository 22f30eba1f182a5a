package kf_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wecomsim"
)

const (
	simCorp     = "ww0123456789abcdef"
	simAgent    = 1000002
	simSecret   = "helpdesk-secret"
	simAccount  = "wkSIMACCOUNT0000000000000000000A"
	simCustomer = "wmSIMCUSTOMER"
)

type simEnv struct {
	sim    *wecomsim.Server
	clock  *clockwork.FakeClock
	client *kf.Client
	base   string
}

func newSimEnv(t *testing.T) *simEnv {
	t.Helper()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	sim := wecomsim.New(wecomsim.Options{
		Apps:       []wecomsim.App{{CorpID: simCorp, AgentID: simAgent, Secret: simSecret}},
		KFAccounts: []wecomsim.KFAccount{{OpenKfID: simAccount, AgentID: simAgent}},
		Now:        clk.Now,
	})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return &simEnv{sim: sim, clock: clk, client: kf.NewClient(srv.URL, srv.Client()), base: srv.URL}
}

// token fetches an access token as the service's token manager would.
func (e *simEnv) token(t *testing.T) string {
	t.Helper()
	q := url.Values{"corpid": {simCorp}, "corpsecret": {simSecret}}
	resp, err := http.Get(e.base + "/cgi-bin/gettoken?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.AccessToken == "" {
		t.Fatalf("gettoken: %s", b)
	}
	return r.AccessToken
}

// pullAll drains the account as the channel will: loop while has_more,
// empty pages included, keeping the stored cursor when none comes back.
func pullAll(t *testing.T, e *simEnv, tok, msgToken, cursor string) ([]kf.Message, string) {
	t.Helper()
	var out []kf.Message
	for range 20 {
		r, err := e.client.SyncMsg(context.Background(), tok, kf.SyncMsgRequest{Cursor: cursor, Token: msgToken, Limit: 2, OpenKfID: simAccount})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.MsgList...)
		cursor = r.Cursor(cursor)
		if !r.More() {
			return out, cursor
		}
	}
	t.Fatal("pull did not end")
	return nil, ""
}

// TestAgainstSimulator runs the protocol layer against wecomsim: the pull
// loop through an empty has_more page and a page without cursor, 95007 for
// an old Token, a budgeted answer with derived msgids, a re-send refused as
// a duplicate, the 6th send over the budget, and a token refresh
// (KF.md §14.3, 8, 11, 12, 13, 14).
func TestAgainstSimulator(t *testing.T) {
	e := newSimEnv(t)
	ctx := context.Background()
	tok := e.token(t)
	var ids []string
	for _, text := range []string{"一", "二", "三"} {
		id, err := e.sim.KFCustomerWrites(ctx, simAccount, simCustomer, text)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	msgToken := e.sim.KFLastToken(simAccount)

	e.sim.KFEmptyPagesNext(1)
	msgs, cursor := pullAll(t, e, tok, msgToken, "")
	if len(msgs) != 3 || msgs[2].MsgID != ids[2] || cursor == "" {
		t.Fatalf("pulled %d messages, cursor %q", len(msgs), cursor)
	}
	last := msgs[2]
	prompt, ok := last.Prompt()
	if !ok || prompt != "三" {
		t.Fatalf("Prompt = %q, %v", prompt, ok)
	}

	// A page without next_cursor keeps the stored cursor.
	e.sim.KFNoCursorNext(1)
	if more, c := pullAll(t, e, tok, msgToken, cursor); len(more) != 0 || c != cursor {
		t.Fatalf("after the last page: %d messages, cursor %q (stored %q)", len(more), c, cursor)
	}

	// The Token dies after 10 minutes; the pull goes on without it.
	e.clock.Advance(10 * time.Minute)
	_, err := e.client.SyncMsg(ctx, tok, kf.SyncMsgRequest{Cursor: cursor, Token: msgToken, OpenKfID: simAccount})
	if !kf.MsgTokenExpired(err) {
		t.Fatalf("old Token: %v, want 95007", err)
	}
	if _, err := e.client.SyncMsg(ctx, tok, kf.SyncMsgRequest{Cursor: cursor, OpenKfID: simAccount}); err != nil {
		t.Fatalf("without Token: %v", err)
	}

	// A long answer: at most 5 parts, each ≤ 2048 bytes, all delivered.
	answer := strings.Repeat("这是回答里的一句话。", 500)
	parts := kf.Budget(answer, "（回复“继续”查看更多）", nil)
	if len(parts) != kf.MaxParts {
		t.Fatalf("%d parts", len(parts))
	}
	for i, p := range parts {
		if _, err := e.client.SendMsg(ctx, tok, kf.TextMessage(simAccount, simCustomer, kf.OutboundMsgID(last.MsgID, i), p)); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	// A crash before the 5th was recorded: its re-send is a duplicate,
	// which counts as delivered even with the budget spent.
	_, err = e.client.SendMsg(ctx, tok, kf.TextMessage(simAccount, simCustomer, kf.OutboundMsgID(last.MsgID, 4), parts[4]))
	if !kf.DuplicateMsgID(err) || kf.OverBudget(err) {
		t.Fatalf("re-sent part: %v, want a duplicate", err)
	}
	_, err = e.client.SendMsg(ctx, tok, kf.TextMessage(simAccount, simCustomer, kf.OutboundMsgID(last.MsgID, 5), "多一条"))
	if !kf.OverBudget(err) || !kf.Permanent(err) {
		t.Fatalf("6th send: %v, want 95001", err)
	}
	got := e.sim.KFReceived(simAccount, simCustomer)
	if len(got) != kf.MaxParts || got[4].Content != parts[4] {
		t.Fatalf("customer received %d messages", len(got))
	}

	// The access token expires: TokenRejected, and the same request
	// replayed with a new token goes through.
	if _, err := e.sim.KFCustomerWrites(ctx, simAccount, simCustomer, "再来"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	req := kf.TextMessage(simAccount, simCustomer, kf.OutboundMsgID("next", 0), "好的")
	if _, err := e.client.SendMsg(ctx, tok, req); !kf.TokenRejected(err) {
		t.Fatalf("expired token: %v, want TokenRejected", err)
	} else if strings.Contains(err.Error(), tok) {
		t.Fatal("error leaks the access token")
	}
	if _, err := e.client.SendMsg(ctx, e.token(t), req); err != nil {
		t.Fatalf("replay with a new token: %v", err)
	}

	// A person takes over: 95018, permanent.
	if _, err := e.sim.KFHandOver(ctx, simAccount, simCustomer, "zhangsan"); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.SendMsg(ctx, e.token(t), kf.TextMessage(simAccount, simCustomer, "", "还在吗"))
	if !kf.HandedOver(err) || !kf.Permanent(err) {
		t.Fatalf("handed over: %v, want 95018", err)
	}
}

// TestWelcomeAgainstSimulator: an enter_session's welcome_code answered
// with send_msg_on_event once (KF.md §14.10).
func TestWelcomeAgainstSimulator(t *testing.T) {
	e := newSimEnv(t)
	ctx := context.Background()
	tok := e.token(t)
	if _, err := e.sim.KFCustomerEnters(ctx, simAccount, simCustomer, "1", "site"); err != nil {
		t.Fatal(err)
	}
	msgs, _ := pullAll(t, e, tok, "", "")
	if len(msgs) != 1 || msgs[0].EventType() != kf.EventEnterSession || msgs[0].Customer() != simCustomer {
		t.Fatalf("pulled %+v", msgs)
	}
	code := msgs[0].Event.WelcomeCode
	if code == "" {
		t.Fatal("no welcome_code")
	}
	e.clock.Advance(5 * time.Second)
	if _, err := e.client.SendMsgOnEvent(ctx, tok, kf.EventText(code, "", "欢迎")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.SendMsgOnEvent(ctx, tok, kf.EventText(code, "", "欢迎")); err == nil {
		t.Fatal("a welcome_code was used twice")
	}
	b, err := e.client.BatchGetCustomers(ctx, tok, kf.BatchGetRequest{ExternalUserIDs: []string{simCustomer}})
	if err != nil || len(b.Customers) != 1 || b.Customers[0].Nickname == "" {
		t.Fatalf("batchget = %+v, %v", b, err)
	}
}
