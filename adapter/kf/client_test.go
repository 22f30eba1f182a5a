package kf

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const secretToken = "SECRET-ACCESS-TOKEN-zz9"

type call struct {
	method, path, token, contentType string
	body                             map[string]any
}

// fakeWeCom answers every request with answer and records it.
func fakeWeCom(t *testing.T, status int, answer string) (*Client, *[]call) {
	t.Helper()
	var calls []call
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c := call{method: r.Method, path: r.URL.Path, token: r.URL.Query().Get("access_token"),
			contentType: r.Header.Get("Content-Type")}
		if err := json.Unmarshal(b, &c.body); err != nil {
			t.Errorf("request body is not JSON: %q", b)
		}
		calls = append(calls, c)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return NewClient(srv.URL+"/prefix/", srv.Client()), &calls
}

func TestClientCalls(t *testing.T) {
	ctx := context.Background()

	c, calls := fakeWeCom(t, 200, `{"errcode":0,"errmsg":"ok","next_cursor":"n1","has_more":0,"msg_list":[{"msgid":"m1","msgtype":"text","origin":3,"text":{"content":"hi"}}]}`)
	r, err := c.SyncMsg(ctx, secretToken, SyncMsgRequest{Cursor: "c0", Token: "ENC", Limit: 2, OpenKfID: account})
	if err != nil || r.NextCursor != "n1" || len(r.MsgList) != 1 {
		t.Fatalf("SyncMsg = %+v, %v", r, err)
	}
	got := (*calls)[0]
	if got.method != http.MethodPost || got.path != "/prefix/cgi-bin/kf/sync_msg" || got.token != secretToken ||
		got.contentType != "application/json" || got.body["cursor"] != "c0" || got.body["open_kfid"] != account ||
		got.body["limit"] != float64(2) || got.body["token"] != "ENC" {
		t.Errorf("sync_msg request = %+v", got)
	}

	c, calls = fakeWeCom(t, 200, `{"errcode":0,"errmsg":"ok","msgid":"wbX"}`)
	id, err := c.SendMsg(ctx, secretToken, TextMessage(account, customer, "wbX", "你好"))
	if err != nil || id != "wbX" {
		t.Fatalf("SendMsg = %q, %v", id, err)
	}
	if got := (*calls)[0]; got.path != "/prefix/cgi-bin/kf/send_msg" || got.body["msgid"] != "wbX" || got.body["touser"] != customer {
		t.Errorf("send_msg request = %+v", got)
	}
	id, err = c.SendMsgOnEvent(ctx, secretToken, EventText("CODE", "", "欢迎"))
	if err != nil || id != "wbX" {
		t.Fatalf("SendMsgOnEvent = %q, %v", id, err)
	}
	if got := (*calls)[1]; got.path != "/prefix/cgi-bin/kf/send_msg_on_event" || got.body["code"] != "CODE" {
		t.Errorf("send_msg_on_event request = %+v", got)
	}
	if _, has := (*calls)[1].body["msgid"]; has {
		t.Error("empty msgid was sent")
	}

	c, calls = fakeWeCom(t, 200, `{"errcode":0,"errmsg":"ok","customer_list":[{"external_userid":"`+customer+`","nickname":"张三","avatar":"http://a","gender":1,"unionid":"oA","enter_session_context":{"scene":"123"}}],"invalid_external_userid":["wmBAD"]}`)
	b, err := c.BatchGetCustomers(ctx, secretToken, BatchGetRequest{ExternalUserIDs: []string{customer, "wmBAD"}})
	if err != nil || len(b.Customers) != 1 || b.Customers[0].Nickname != "张三" || len(b.Invalid) != 1 ||
		!strings.Contains(string(b.Customers[0].EnterSessionContext), "123") {
		t.Fatalf("BatchGetCustomers = %+v, %v", b, err)
	}
	if got := (*calls)[0]; got.path != "/prefix/cgi-bin/kf/customer/batchget" || len(got.body["external_userid_list"].([]any)) != 2 {
		t.Errorf("batchget request = %+v", got)
	}
}

// TestClientErrors: errcodes become *Error, other statuses *HTTPError,
// garbage ErrMalformed, and no error text ever holds the access token.
func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
		if strings.Contains(err.Error(), secretToken) {
			t.Fatalf("error leaks the token: %v", err)
		}
	}
	calls := map[string]func(*Client) error{
		"sync_msg": func(c *Client) error {
			_, err := c.SyncMsg(ctx, secretToken, SyncMsgRequest{OpenKfID: account})
			return err
		},
		"send_msg": func(c *Client) error {
			_, err := c.SendMsg(ctx, secretToken, TextMessage(account, customer, "", "x"))
			return err
		},
		"send_msg_on_event": func(c *Client) error {
			_, err := c.SendMsgOnEvent(ctx, secretToken, EventText("c", "", "x"))
			return err
		},
		"batchget": func(c *Client) error {
			_, err := c.BatchGetCustomers(ctx, secretToken, BatchGetRequest{ExternalUserIDs: []string{customer}})
			return err
		},
	}
	for name, do := range calls {
		t.Run(name, func(t *testing.T) {
			c, _ := fakeWeCom(t, 200, `{"errcode":95018,"errmsg":"send msg session status invalid"}`)
			err := do(c)
			check(t, err)
			var e *Error
			if !errors.As(err, &e) || e.Code != 95018 || !strings.HasPrefix(e.API, "kf/") {
				t.Errorf("err = %v, want *Error 95018", err)
			}

			c, _ = fakeWeCom(t, 502, `<html>bad gateway</html>`)
			err = do(c)
			check(t, err)
			var he *HTTPError
			if !errors.As(err, &he) || he.Status != 502 {
				t.Errorf("err = %v, want HTTPError 502", err)
			}

			c, _ = fakeWeCom(t, 200, `<html>`)
			err = do(c)
			check(t, err)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}

			// Nothing listens: the transport error names the URL, minus its query.
			dead := NewClient("http://127.0.0.1:1", nil)
			check(t, do(dead))
		})
	}

	c, _ := fakeWeCom(t, 200, `{}`)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.SyncMsg(cctx, secretToken, SyncMsgRequest{OpenKfID: account})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	check(t, err)
}
