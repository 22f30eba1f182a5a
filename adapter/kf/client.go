package kf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxAnswerBytes bounds what Client reads of an answer: a sync_msg page of
// 1000 messages stays well under it.
const maxAnswerBytes = 8 << 20

// Client calls the kf APIs: one HTTP request per call, no retries. The
// access token is an argument of every call, because the service's token
// manager owns it and decides when to refresh (see TokenRejected).
type Client struct {
	base string // scheme://host[:port][/prefix], no trailing slash
	http *http.Client
}

// NewClient calls the API at base (https://qyapi.weixin.qq.com, or
// wecom.api_base) through hc, which carries the timeout; nil means
// http.DefaultClient.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), http: hc}
}

// SyncMsg pulls one page of messages for req.OpenKfID.
func (c *Client) SyncMsg(ctx context.Context, token string, req SyncMsgRequest) (SyncMsgResponse, error) {
	data, err := c.post(ctx, token, "kf/sync_msg", req)
	if err != nil {
		return SyncMsgResponse{}, err
	}
	return ParseSyncMsg(data)
}

// SendMsg sends one message and returns the msgid WeCom answers (req.MsgID
// when one was given). Success only means WeCom accepted it: a
// msg_send_fail event may follow.
func (c *Client) SendMsg(ctx context.Context, token string, req SendMsgRequest) (string, error) {
	return c.send(ctx, token, "kf/send_msg", req)
}

// SendMsgOnEvent answers an event's code (a welcome_code) with one message.
func (c *Client) SendMsgOnEvent(ctx context.Context, token string, req SendMsgOnEventRequest) (string, error) {
	return c.send(ctx, token, "kf/send_msg_on_event", req)
}

func (c *Client) send(ctx context.Context, token, api string, req any) (string, error) {
	r, err := callAPI[sendResponse](ctx, c, token, api, req)
	return r.MsgID, err
}

// status is the errcode and errmsg of every answer.
type status struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (s status) answerStatus() status { return s }

// callAPI posts body to api and decodes the answer into an R: the zero R and
// an *Error when the errcode is not 0.
func callAPI[R interface{ answerStatus() status }](ctx context.Context, c *Client, token, api string, body any) (R, error) {
	var zero, r R
	data, err := c.post(ctx, token, api, body)
	if err != nil {
		return zero, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return zero, fmt.Errorf("%w: %s: %v", ErrMalformed, api, err)
	}
	if s := r.answerStatus(); s.ErrCode != 0 {
		return zero, &Error{API: api, Code: s.ErrCode, Msg: s.ErrMsg}
	}
	return r, nil
}

// post sends body as JSON to /cgi-bin/<api>?access_token= and returns the
// answer of a 200. Errors name the API, never the URL: the token is in its
// query.
func (c *Client) post(ctx context.Context, token, api string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("kf: %s: %w", api, err)
	}
	u := c.base + "/cgi-bin/" + api + "?access_token=" + url.QueryEscape(token)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("kf: %s: %w", api, withoutURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kf: %s: %w", api, withoutURL(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("kf: %s: read answer: %w", api, withoutURL(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{API: api, Status: resp.StatusCode}
	}
	return data, nil
}

// withoutURL drops the request URL (and with it the access token) from a
// *url.Error, keeping the cause, so errors.Is and Timeout() still work.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		cp := *ue
		if i := strings.IndexByte(cp.URL, '?'); i >= 0 {
			cp.URL = cp.URL[:i]
		}
		return &cp
	}
	return err
}
