package wecomsim

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestInvalidUser(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t)
	f.sim.SetInvalidUser("LeftTheCompany")

	res := f.send(t, tok, text("zhangsan|lefttheCompany", "hi"))
	if res.ErrCode != 0 || res.InvalidUser != "leftthecompany" {
		t.Fatalf("partial failure: %+v", res)
	}
	if got := f.sim.Delivered(); len(got) != 1 || got[0].ToUser != "zhangsan" {
		t.Fatalf("delivered %+v, want only zhangsan", got)
	}

	res = f.send(t, tok, text("LeftTheCompany", "hi"))
	if res.ErrCode != 81013 || res.InvalidUser != "leftthecompany" {
		t.Fatalf("only recipient invalid: %+v", res)
	}
	if n := len(f.sim.Delivered()); n != 1 {
		t.Errorf("delivered %d, want 1", n)
	}
}

func TestFailNext(t *testing.T) {
	f := newFixture(t, nil)
	f.sim.FailNext(APIGetToken, -1, "system busy", 2)
	for i := 0; i < 2; i++ {
		if res := f.getToken(t, corpID, secret); res.ErrCode != -1 || !strings.HasPrefix(res.ErrMsg, "system busy") {
			t.Fatalf("fetch %d: %+v", i, res)
		}
	}
	tok := f.token(t)

	const ipMsg = "not allow to access from your ip, hint: [1700000000_1_x], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
	f.sim.FailNext(APISend, 45009, "api freq out of limit", 1)
	f.sim.FailNext(APISend, 60020, ipMsg, 1)
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 45009 {
		t.Fatalf("errcode %d, want 45009", res.ErrCode)
	}
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 60020 || res.ErrMsg != ipMsg {
		t.Fatalf("got %+v, want 60020 with the injected errmsg verbatim", res)
	}
	if res := f.send(t, tok, text("zhangsan", "a")); res.ErrCode != 0 {
		t.Fatalf("after faults: %+v", res)
	}
	if got := f.sim.Rejected(); got[-1] != 2 || got[45009] != 1 || got[60020] != 1 {
		t.Errorf("Rejected = %v", got)
	}
	if f.sim.TokenFetches(agentID) != 1 || f.sim.TotalTokenFetches() != 3 {
		t.Errorf("fetches %d of %d", f.sim.TokenFetches(agentID), f.sim.TotalTokenFetches())
	}

	defer func() {
		if recover() == nil {
			t.Error("FailNext with an unknown api did not panic")
		}
	}()
	f.sim.FailNext("sendd", 1, "", 1)
}

func TestRevokeTokens(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.SameTokenWhileValid = true })
	tok := f.token(t)
	f.sim.RevokeTokens()
	if f.sim.CurrentToken(agentID) != "" {
		t.Error("CurrentToken survived RevokeTokens")
	}
	if res := f.send(t, tok, text("zhangsan", "hi")); res.ErrCode != 40014 {
		t.Fatalf("revoked token: errcode %d, want 40014", res.ErrCode)
	}
	fresh := f.token(t)
	if fresh == tok {
		t.Fatal("gettoken handed out the revoked token again")
	}
	if res := f.send(t, fresh, text("zhangsan", "hi")); res.ErrCode != 0 {
		t.Fatalf("fresh token: %+v", res)
	}
}

func TestDownAndLatency(t *testing.T) {
	f := newFixture(t, nil)
	f.sim.SetDown(true)
	if status, _ := f.roundTrip(t, http.MethodGet, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+secret, ""); status != http.StatusServiceUnavailable {
		t.Fatalf("down: HTTP %d, want 503", status)
	}
	f.sim.SetDown(false)
	tok := f.token(t)

	f.sim.SetLatency(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/cgi-bin/message/send?access_token="+tok,
		strings.NewReader(`{"touser":"zhangsan","msgtype":"text","agentid":1000002,"text":{"content":"hi"}}`))
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	// Close waits for the handler to end: one that ignored the client
	// leaving would deliver the send after its second of latency.
	f.srv.Close()
	if n := len(f.sim.Delivered()); n != 0 {
		t.Errorf("a send whose client gave up was delivered")
	}
	if f.sim.SendCalls() != 1 || f.sim.TotalTokenFetches() != 2 {
		t.Errorf("calls: send %d, gettoken %d", f.sim.SendCalls(), f.sim.TotalTokenFetches())
	}
}
