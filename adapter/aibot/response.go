package aibot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxResponseBody bounds what PostResponse reads of WeCom's answer, which is
// a short errcode object.
const maxResponseBody = 64 << 10

// ResponseError is WeCom's refusal of a response_url POST: a non-zero errcode.
type ResponseError struct {
	ErrCode int
	ErrMsg  string
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("aibot: response_url: errcode %d: %s", e.ErrCode, e.ErrMsg)
}

// PostResponse sends markdown (at most MaxStreamBytes: the caller cuts) as
// the one active reply a response_url allows, with feedback buttons when
// feedbackID is not empty. It fails on a transport error, a non-2xx status,
// a body that is not JSON, or a non-zero errcode (*ResponseError); an
// answer without errcode counts as success (its format is undocumented).
//
// It makes exactly one request and never retries: the URL is single-use, so
// the caller records the use before calling and treats any failure as final.
// The URL is never put into an error (it is a credential for that reply).
func PostResponse(ctx context.Context, client *http.Client, responseURL, markdown, feedbackID string) error {
	if len(markdown) > MaxStreamBytes {
		return fmt.Errorf("aibot: response_url: markdown of %d bytes, limit %d", len(markdown), MaxStreamBytes)
	}
	if len(feedbackID) > MaxFeedbackIDBytes {
		return fmt.Errorf("aibot: response_url: feedback id of %d bytes, limit %d", len(feedbackID), MaxFeedbackIDBytes)
	}
	msg := MarkdownReply(markdown)
	if feedbackID != "" {
		msg.Markdown.Feedback = &FeedbackRef{ID: feedbackID}
	}
	body, err := marshal(msg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, responseURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("aibot: response_url: bad url")
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error carries the URL; keep only what went wrong.
		return fmt.Errorf("aibot: response_url: %w", unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("aibot: response_url: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("aibot: response_url: HTTP %d", resp.StatusCode)
	}
	var ans struct {
		ErrCode *int   `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("aibot: response_url: answer is not JSON: %v", err)
	}
	if ans.ErrCode != nil && *ans.ErrCode != 0 {
		return &ResponseError{ErrCode: *ans.ErrCode, ErrMsg: ans.ErrMsg}
	}
	return nil
}

// unwrapURLError drops the *url.Error around a transport error: its text
// holds the URL, whose response_code is a credential.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
