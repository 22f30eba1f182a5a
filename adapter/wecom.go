package adapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/work/message"

	"github.com/wecombot/wecombot/internal/httpclient"
)

// WeCom error codes the service acts on.
const (
	codeSystemBusy      = -1
	codeInvalidSecret   = 40001
	codeInvalidUser     = 40003
	codeInvalidCorpID   = 40013
	codeInvalidToken    = 40014
	codeMissingToken    = 41001
	codeTokenExpired    = 42001
	codeContentTooLong  = 45002
	codeRateLimited     = 45009
	codeTooConcurrent   = 45033
	codeAPIForbidden    = 48002
	codeIPNotTrusted    = 60020
	codeNoValidReceiver = 81013
)

// APIError is an error answer of the WeCom API (errcode != 0).
type APIError struct {
	API  string // "gettoken", "message/send"
	Code int
	Msg  string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wecom: %s: errcode %d: %s", e.API, e.Code, e.Msg)
}

// errCoder is an error answer of a WeCom API of another package (kf.Error):
// its errcode.
type errCoder interface{ ErrCode() int }

// tokenRejected reports whether WeCom refused the access token itself: the
// call may succeed with a new token. The kf APIs answer the same codes.
func tokenRejected(err error) bool {
	var code int
	var e *APIError
	var c errCoder
	switch {
	case errors.As(err, &e):
		code = e.Code
	case errors.As(err, &c):
		code = c.ErrCode()
	default:
		return false
	}
	return code == codeInvalidToken || code == codeTokenExpired || code == codeMissingToken
}

// configError reports whether err means the bot's configuration (secret, corp
// id, trusted IPs, permissions) is wrong: retrying soon cannot help and
// hammering gettoken gets the app blocked.
func configError(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case codeInvalidSecret, codeInvalidCorpID, codeIPNotTrusted, codeAPIForbidden:
		return true
	}
	return false
}

// permanentSendError reports whether a send can never succeed for this
// recipient or content, so the part fails at once instead of retrying.
// Configuration errors are not permanent: the admin fixes the secret or the
// trusted IPs and the waiting parts go out.
func permanentSendError(err error) bool {
	if errors.As(err, new(permanentError)) {
		return true
	}
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case codeInvalidUser, codeNoValidReceiver, codeContentTooLong:
		return true
	}
	return false
}

var ipPattern = regexp.MustCompile(`from ip: ?([0-9a-fA-F:.]+)`)

// Hint tells an administrator what to do about err, or "" when there is
// nothing specific to say.
func Hint(err error) string {
	var e *APIError
	if !errors.As(err, &e) {
		var he *HTTPError
		var ne interface{ Timeout() bool }
		switch {
		case errors.As(err, &he):
			return "WeCom API answered HTTP " + strconv.Itoa(he.Status) + ": an outage or a proxy in between; the service retries."
		case errors.As(err, &ne) && ne.Timeout():
			return "WeCom API did not answer in time: check the network path to wecom.api_base."
		case errors.As(err, &ne):
			return "WeCom API cannot be reached: check wecom.api_base, DNS and the outgoing firewall."
		}
		return ""
	}
	switch e.Code {
	case codeInvalidSecret:
		return "The app secret is wrong: copy the Secret of this app (not of another app) into bots[].secret."
	case codeInvalidCorpID:
		return "The corp id is wrong: copy it from My Company > Company Info into bots[].corp_id."
	case codeIPNotTrusted:
		if m := ipPattern.FindStringSubmatch(e.Msg); m != nil {
			return "WeCom refuses calls from IP " + m[1] + ": add it to the app's trusted IPs (企业可信IP) in the admin console."
		}
		return "WeCom refuses calls from this server's IP: add it to the app's trusted IPs (企业可信IP) in the admin console."
	case codeAPIForbidden:
		return "This app may not call the API: check the app's permissions and that it is a self-built app."
	case codeRateLimited, codeTooConcurrent:
		return "WeCom is rate limiting this app: the service backs off and retries."
	case codeSystemBusy:
		return "WeCom is busy: the service retries with backoff."
	case codeInvalidToken, codeTokenExpired, codeMissingToken:
		return "WeCom refused the access token: the service fetches a new one."
	}
	return ""
}

// apiClient is a thin WeCom API client. It exists instead of silenceper's
// because silenceper hard-codes the public host (wecom.api_base must be
// honoured, gettoken included), uses an HTTP client without a timeout, takes no
// ctx, and its errors carry whole URLs with access_token and corpsecret in them.
// It still speaks through silenceper's request and response types.
type apiClient struct {
	base string // scheme://host[:port][/prefix], no trailing slash
	http *http.Client
}

func newAPIClient(base string, timeout time.Duration) *apiClient {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &apiClient{base: strings.TrimRight(base, "/"),
		http: &http.Client{Timeout: timeout, Transport: httpclient.NewTransport()}}
}

type tokenResponse struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// getToken calls gettoken for one app.
func (c *apiClient) getToken(ctx context.Context, corpID, secret string) (string, time.Duration, error) {
	q := url.Values{"corpid": {corpID}, "corpsecret": {secret}}
	var r tokenResponse
	if err := c.do(ctx, "gettoken", http.MethodGet, "/cgi-bin/gettoken?"+q.Encode(), nil, &r); err != nil {
		return "", 0, err
	}
	if r.ErrCode != 0 {
		return "", 0, &APIError{API: "gettoken", Code: r.ErrCode, Msg: r.ErrMsg}
	}
	if r.AccessToken == "" || r.ExpiresIn <= 0 {
		return "", 0, errors.New("wecom: gettoken: answer without access_token or expires_in")
	}
	return r.AccessToken, time.Duration(r.ExpiresIn) * time.Second, nil
}

// textRequest builds the message/send body of a text. silenceper embeds
// SendRequestCommon as a pointer: left nil, touser and agentid silently vanish.
func textRequest(user string, agentID int64, content string, dupCheck time.Duration) ([]byte, error) {
	common := &message.SendRequestCommon{ToUser: user, MsgType: "text", AgentID: strconv.FormatInt(agentID, 10)}
	if dupCheck > 0 {
		common.EnableDuplicateCheck = 1
		common.DuplicateCheckInterval = int(dupCheck / time.Second)
	}
	return json.Marshal(message.SendTextRequest{SendRequestCommon: common, Text: message.TextField{Content: content}})
}

// sendMessage posts a message/send body; the body is bytes so that a retry
// after a token refresh sends exactly the same request.
func (c *apiClient) sendMessage(ctx context.Context, token string, body []byte) (string, error) {
	var r message.SendResponse
	path := "/cgi-bin/message/send?access_token=" + url.QueryEscape(token)
	if err := c.do(ctx, "message/send", http.MethodPost, path, body, &r); err != nil {
		return "", err
	}
	if r.ErrCode != 0 {
		return "", &APIError{API: "message/send", Code: int(r.ErrCode), Msg: r.ErrMsg}
	}
	if r.InvalidUser != "" {
		// errcode 0 with invaliduser: WeCom accepted the call but the
		// recipient does not exist; nothing was delivered.
		return "", &APIError{API: "message/send", Code: codeNoValidReceiver, Msg: "invaliduser " + r.InvalidUser}
	}
	return r.MsgID, nil
}

func (c *apiClient) do(ctx context.Context, api, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("wecom: %s: %w", api, redact(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("wecom: %s: %w", api, redact(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("wecom: %s: read answer: %w", api, redact(err))
	}
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{API: api, Status: resp.StatusCode}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("wecom: %s: answer is not JSON: %w", api, err)
	}
	return nil
}

// getMedia downloads a temporary media file (media/get): its bytes, or
// errMediaTooLarge past limit. WeCom answers an error with a JSON body
// carrying errcode instead of the file: that is an *APIError, not bytes.
func (c *apiClient) getMedia(ctx context.Context, token, mediaID string, limit int64) ([]byte, error) {
	const api = "media/get"
	q := url.Values{"access_token": {token}, "media_id": {mediaID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/cgi-bin/media/get?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("wecom: %s: %w", api, redact(err))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("wecom: %s: %w", api, redact(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{API: api, Status: resp.StatusCode}
	}
	data, err := readLimited(resp.Body, limit)
	if err != nil {
		if errors.Is(err, errMediaTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("wecom: %s: read answer: %w", api, redact(err))
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var r struct {
			ErrCode *int   `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		if json.Unmarshal(t, &r) == nil && r.ErrCode != nil {
			msg := r.ErrMsg
			if *r.ErrCode == 0 {
				msg = "answered JSON instead of the file: " + msg
			}
			return nil, &APIError{API: api, Code: *r.ErrCode, Msg: msg}
		}
	}
	return data, nil
}

// HTTPError is a non-200 answer of the WeCom API (a proxy, an outage).
type HTTPError struct {
	API    string
	Status int
}

func (e *HTTPError) Error() string { return fmt.Sprintf("wecom: %s: HTTP status %d", e.API, e.Status) }

var secretParam = regexp.MustCompile(`(?i)(access_token|corpsecret)=[^&\s"]*`)

// Redact masks access tokens and secrets in a text that may contain a WeCom
// URL (log lines, error strings).
func Redact(s string) string { return secretParam.ReplaceAllString(s, "$1=***") }

// redact returns err with any URL in it masked; *url.Error prints the whole
// request URL, access_token and corpsecret included.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		cp := *ue
		cp.URL = Redact(ue.URL)
		return &cp
	}
	return redactedError{msg: Redact(err.Error()), err: err}
}

// redactedError is an error whose text is masked; it still unwraps to the
// error it masks, so callers can tell a timeout or a network failure.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }
