package llm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Kind says what a failed call means for the caller: whether to slow down,
// to retry, or to stop asking until the configuration is fixed.
type Kind int

const (
	// KindFailed is any other failure: a network error, a 5xx, a broken
	// stream, an empty answer. Worth a retry or two.
	KindFailed Kind = iota
	// KindRateLimited is 429, or 503 (the provider is overloaded): every
	// call should wait, not only this one (see RetryAfter).
	KindRateLimited
	// KindConfig is 401, 403 or 404: a bad key, a model or a URL the
	// provider does not know. Retrying cannot help.
	KindConfig
	// KindTimeout is a call that took longer than llm.timeout.
	KindTimeout
)

func (k Kind) String() string {
	switch k {
	case KindRateLimited:
		return "rate_limited"
	case KindConfig:
		return "config_error"
	case KindTimeout:
		return "timeout"
	default:
		return "error"
	}
}

// Error is a failed call to the model, with what the caller needs to react.
type Error struct {
	Kind   Kind
	Status int // HTTP status; 0 when none came back
	// RetryAfter is the provider's Retry-After on a rate-limited call;
	// 0 when it sent none.
	RetryAfter time.Duration
	// unreachable: no connection to the model API was made (DNS, refused,
	// no route).
	unreachable bool
	err         error
}

func (e *Error) Error() string {
	if e.err == nil { // made by hand, as test fakes do
		return fmt.Sprintf("llm: %s (status %d)", e.Kind, e.Status)
	}
	return e.err.Error()
}
func (e *Error) Unwrap() error { return e.err }

// KindOf is the kind of err; KindFailed for errors not from a call.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindFailed
}

// Causes of a failed call, as an operator names them: stable words that
// logs carry and the panel translates (CauseOf).
const (
	CauseUnreachable  = "unreachable"   // no connection: DNS, refused, no route
	CauseBadKey       = "bad_key"       // 401, 403
	CauseUnknownModel = "unknown_model" // 404: the model or the URL
	CauseNoQuota      = "no_quota"      // 429 insufficient_quota
	CauseRateLimited  = "rate_limited"  // 429, 503
	CauseTimeout      = "timeout"       // no answer within llm.timeout
	CauseFailed       = "failed"        // anything else: 5xx, a broken stream, no text
)

// CauseOf is the cause of err, a failed call to the model; "" for errors
// that are not the model's (storage, a cancelled context, ErrEmpty).
func CauseOf(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	switch {
	case e.unreachable:
		return CauseUnreachable
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return CauseBadKey
	case e.Kind == KindConfig && e.Status == http.StatusTooManyRequests:
		return CauseNoQuota
	case e.Status == http.StatusNotFound:
		return CauseUnknownModel
	case e.Kind == KindRateLimited:
		return CauseRateLimited
	case e.Kind == KindTimeout:
		return CauseTimeout
	}
	return CauseFailed
}

// hints say what an operator can do about each cause.
var hints = map[string]string{
	CauseUnreachable:  "the model API cannot be reached: check llm.base_url, DNS and the network (or the proxy)",
	CauseBadKey:       "the model API refused the key: check llm.api_key",
	CauseNoQuota:      "the model account has no quota left: check its billing",
	CauseUnknownModel: "the model API does not know this model or URL: check llm.model, and llm.base_url (it includes /v1)",
	CauseRateLimited:  "the provider is rate-limiting: calls are held back and retried; raise the account's limits or lower llm.max_concurrency",
	CauseTimeout:      "the model did not answer within llm.timeout",
}

// Hint says what an operator can do about err, or "" when nothing in the
// configuration would help.
func Hint(err error) string { return hints[CauseOf(err)] }

// HintFor is Hint for a model whose key is configured at keyName rather
// than llm.api_key (a bot's own: "bots[1] (hr).llm.api_key"); "": Hint.
func HintFor(err error, keyName string) string {
	h := Hint(err)
	if keyName != "" && CauseOf(err) == CauseBadKey {
		h = strings.Replace(h, "llm.api_key", keyName, 1)
	}
	return h
}

// maxRetryAfter bounds a provider's Retry-After: a misconfigured proxy
// saying "come back in a day" must not stall every answer for a day.
const maxRetryAfter = time.Minute

// retryAfterKey carries, in a request's context, where retryAfterTransport
// puts the Retry-After of a 429 or 503: go-openai's errors keep the status
// of a failed response but not its headers.
type retryAfterKey struct{}

// retryAfterTransport records the Retry-After of rate-limited responses
// for the call that made the request (callError).
type retryAfterTransport struct{ base http.RoundTripper }

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if slot, ok := req.Context().Value(retryAfterKey{}).(*atomic.Int64); ok {
			slot.Store(int64(parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())))
		}
	}
	return resp, err
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 10.2.3);
// 0 when v is neither.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// withRetryAfter returns ctx carrying a slot for the call's Retry-After.
func withRetryAfter(ctx context.Context) (context.Context, *atomic.Int64) {
	slot := new(atomic.Int64)
	return context.WithValue(ctx, retryAfterKey{}, slot), slot
}

// callError describes err, the failure of a call, as an *Error of its kind:
// status and message of an API error (go-openai's errors never carry the
// key), or the transport's error without the request URL, prefixed with
// what.
func callError(what string, err error, retryAfter *atomic.Int64) *Error {
	e := &Error{Kind: KindFailed}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		// The request URL is left out: llm.base_url may carry a proxy's
		// credentials or a key in its query. What failed stays.
		err = urlErr.Err
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	e.unreachable = errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial")
	switch {
	case errors.As(err, &apiErr):
		e.Status = apiErr.HTTPStatusCode
		err = fmt.Errorf("status %d: %s", apiErr.HTTPStatusCode, apiErr.Message)
	case errors.As(err, &reqErr):
		e.Status = reqErr.HTTPStatusCode
		err = fmt.Errorf("status %d", reqErr.HTTPStatusCode)
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind = KindTimeout
		err = fmt.Errorf("timed out: %w", err)
	case errors.Is(err, errIdle):
		e.Kind = KindTimeout
	}
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if apiErr != nil && apiErr.Code == "insufficient_quota" {
			e.Kind = KindConfig // out of credit: waiting does not help
			break
		}
		e.Kind = KindRateLimited
		if retryAfter != nil {
			e.RetryAfter = time.Duration(retryAfter.Load())
		}
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		e.Kind = KindConfig
	}
	e.err = fmt.Errorf("llm: %s: %w", what, err)
	return e
}

// fail is callError for c's calls, with c's key masked wherever the
// provider, or a proxy, echoed it back in a message.
func (c *Client) fail(what string, err error, retryAfter *atomic.Int64) error {
	e := callError(what, err, retryAfter)
	if c.key != "" && strings.Contains(e.err.Error(), c.key) {
		e.err = errors.New(strings.ReplaceAll(e.err.Error(), c.key, "******"))
	}
	return e
}

// noText is the failure of a call that answered without text.
func noText(what string) error {
	return &Error{Kind: KindFailed, err: errors.New("llm: " + what + ": the model returned no text")}
}
