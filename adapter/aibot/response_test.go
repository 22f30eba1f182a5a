package aibot

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// Edge case 10 (this package's part): one POST, never a retry.
func TestPostResponse(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		answer     string
		markdown   string
		feedbackID string
		wantBody   string
		wantErr    bool
		wantCode   int
	}{
		{name: "ok with feedback", status: 200, answer: `{"errcode":0,"errmsg":"ok"}`, markdown: "**答案** <b>&", feedbackID: "fb-1",
			wantBody: `{"msgtype":"markdown","markdown":{"content":"**答案** <b>&","feedback":{"id":"fb-1"}}}`},
		{name: "ok without feedback", status: 200, answer: `{"errcode":0}`, markdown: "rest",
			wantBody: `{"msgtype":"markdown","markdown":{"content":"rest"}}`},
		{name: "errcode", status: 200, answer: `{"errcode":40008,"errmsg":"invalid message type"}`, markdown: "x", wantErr: true, wantCode: 40008},
		{name: "non-2xx", status: 502, answer: `{"errcode":0}`, markdown: "x", wantErr: true},
		{name: "not json", status: 200, answer: `<html>expired</html>`, markdown: "x", wantErr: true},
		{name: "empty answer", status: 200, answer: ``, markdown: "x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			var got string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				b, _ := io.ReadAll(r.Body)
				got = string(b)
				if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("%s with %q", r.Method, r.Header.Get("Content-Type"))
				}
				if r.URL.Query().Get("response_code") != "RC" {
					t.Errorf("query %q", r.URL.RawQuery)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			}))
			defer srv.Close()
			url := srv.URL + "/cgi-bin/aibot/response?response_code=RC"
			err := PostResponse(context.Background(), srv.Client(), url, tt.markdown, tt.feedbackID)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("%d requests, want exactly 1", n)
			}
			if tt.wantBody != "" && got != tt.wantBody {
				t.Errorf("body %s\nwant %s", got, tt.wantBody)
			}
			var re *ResponseError
			if tt.wantCode != 0 && (!errors.As(err, &re) || re.ErrCode != tt.wantCode || re.ErrMsg == "") {
				t.Errorf("err = %#v, want errcode %d", err, tt.wantCode)
			}
			if err != nil && strings.Contains(err.Error(), "RC") {
				t.Errorf("error leaks the response code: %v", err)
			}
		})
	}
}

func TestPostResponseRefusesLocally(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	ctx := context.Background()
	if err := PostResponse(ctx, srv.Client(), srv.URL, strings.Repeat("字", MaxStreamBytes/3+1), ""); err == nil {
		t.Error("markdown over the limit was sent")
	}
	if err := PostResponse(ctx, srv.Client(), srv.URL, "x", strings.Repeat("f", MaxFeedbackIDBytes+1)); err == nil {
		t.Error("feedback id over the limit was sent")
	}
	if calls.Load() != 0 {
		t.Fatalf("%d requests for refused input", calls.Load())
	}
}

// A transport error names neither the URL nor its response_code.
func TestPostResponseTransportError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := srv.URL + "/?response_code=SECRETCODE"
	srv.Close()
	err := PostResponse(context.Background(), srv.Client(), url, "x", "")
	if err == nil || strings.Contains(err.Error(), "SECRETCODE") {
		t.Fatalf("err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := PostResponse(ctx, http.DefaultClient, url, "x", ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// The markdown at the limit is sent whole: the limit counts content bytes,
// not escaped JSON.
func TestPostResponseAtLimit(t *testing.T) {
	content := strings.Repeat("<", MaxStreamBytes)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m RespondMsg
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.Markdown == nil || m.Markdown.Content != content {
			t.Errorf("markdown %+v, %v", m.Markdown != nil && m.Markdown.Content == content, err)
		}
		io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
	}))
	defer srv.Close()
	if err := PostResponse(context.Background(), srv.Client(), srv.URL, content, ""); err != nil {
		t.Fatal(err)
	}
}
