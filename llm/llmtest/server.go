package llmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxBodyBytes holds a 10 MB image as a base64 data URL.
const maxBodyBytes = 16 << 20

// Message is one chat message as the fake understood it. Content made of
// text parts is joined into one string; Images are the URLs of its
// image_url parts (data: URLs, as the service sends them).
type Message struct {
	Role    string
	Content string
	Images  []string
}

// Request is what the service asked for.
type Request struct {
	Model    string
	Messages []Message
	Stream   bool
}

// Reply tells the server how to answer one request.
type Reply struct {
	// Content is the answer, or the error message when Status is not 200.
	Content string
	// Delay passes before the first byte of the answer.
	Delay time.Duration
	// ChunkDelay passes between streamed chunks.
	ChunkDelay time.Duration
	// Status other than 0 and 200 answers an OpenAI-style JSON error,
	// streamed requests included, as the real API does.
	Status int
	// Hang never answers; the request ends when the client gives up or
	// the Server is closed.
	Hang bool
	// Header is added to the response's headers, error replies included:
	// Retry-After on a 429, as a provider's rate limit sends it.
	Header http.Header
}

// Spread is a reply of content that takes total to arrive in full. A
// streamed answer starts after first, the smaller of the two, and its
// chunks follow evenly spaced, the last at total; a plain one comes whole
// after total. It gives a slow model a realistic stream: an early first
// token, then text trickling in.
func Spread(req Request, content string, first, total time.Duration) Reply {
	if !req.Stream {
		return Reply{Content: content, Delay: total}
	}
	first = min(first, total)
	n := max(len(split(content, chunkRunes)), 1)
	return Reply{Content: content, Delay: first, ChunkDelay: (total - first) / time.Duration(n)}
}

// Server is the fake. All methods are safe for concurrent use.
type Server struct {
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	respond  func(Request) Reply
	key      string
	requests []Request
	calls    int
	inFlight int
}

// New returns a server answering with respond, which is called concurrently
// for concurrent requests. A nil respond echoes "echo: <last user message>".
func New(respond func(Request) Reply) *Server {
	s := &Server{closed: make(chan struct{})}
	s.SetRespond(respond)
	return s
}

// Echo is the default respond function.
func Echo(req Request) Reply {
	last := ""
	for _, m := range req.Messages {
		if m.Role == "user" {
			last = m.Content
		}
	}
	return Reply{Content: "echo: " + last}
}

// SetRespond replaces the respond function for requests arriving from now on.
// nil restores Echo.
func (s *Server) SetRespond(fn func(Request) Reply) {
	if fn == nil {
		fn = Echo
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.respond = fn
}

// RequireKey makes every request without "Authorization: Bearer <key>" fail
// with 401. An empty key turns the check off.
func (s *Server) RequireKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = key
}

// Requests returns, in arrival order, every request whose body parsed,
// including those refused for missing content, so a test can see what the
// service actually sent.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Calls counts every request to the chat completions endpoint, refused ones
// included.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// InFlight counts the requests to the chat completions endpoint being
// answered now: how many calls the service has open at the model.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Close ends hanging and delayed requests by dropping their connections, so
// an httptest.Server in front of this one can close without waiting for
// clients that never give up. Any request that would wait after Close is
// dropped the same way.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// Handler serves POST {prefix}/v1/chat/completions. The /v1 is required,
// because a BaseURL without it is a real misconfiguration that the real API
// answers with 404 too.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/v1/chat/completions") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", "", "")
		return
	}
	s.mu.Lock()
	s.calls++
	s.inFlight++
	key, respond := s.key, s.respond
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("Invalid method for URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", "", "")
		return
	}
	if key != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case !ok || got == "":
			writeError(w, http.StatusUnauthorized, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "invalid_request_error", "", "")
			return
		case got != key:
			writeError(w, http.StatusUnauthorized, "Incorrect API key provided: "+redact(got)+".", "invalid_request_error", "", "invalid_api_key")
			return
		}
	}

	// Reading the body to its end (not just one JSON value) lets net/http
	// watch the connection, so a Hang ends when the client gives up.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return
	}
	var wire wireRequest
	if err := json.Unmarshal(body, &wire); err != nil {
		writeError(w, http.StatusBadRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", "invalid_request_error", "", "")
		return
	}
	req := wire.request()
	s.mu.Lock()
	s.requests = append(s.requests, Request{Model: req.Model, Messages: slices.Clone(req.Messages), Stream: req.Stream})
	s.mu.Unlock()
	if msg, param := wire.validate(); msg != "" {
		code := ""
		if strings.HasPrefix(msg, "Missing required parameter") {
			code = "missing_required_parameter"
		}
		writeError(w, http.StatusBadRequest, msg, "invalid_request_error", param, code)
		return
	}

	reply := respond(req)
	ctx := r.Context()
	if reply.Hang {
		s.wait(ctx, -1)
		return
	}
	if !s.wait(ctx, reply.Delay) {
		return
	}
	for k, vs := range reply.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if reply.Status != 0 && reply.Status != http.StatusOK {
		msg, typ := reply.Content, errorType(reply.Status)
		if msg == "" {
			msg = http.StatusText(reply.Status)
		}
		writeError(w, reply.Status, msg, typ, "", errorCode(reply.Status))
		return
	}
	if req.Stream {
		s.stream(ctx, w, req, reply)
		return
	}
	writeCompletion(w, req, reply.Content)
}

// wait sleeps for d (forever when d < 0) and reports whether to go on. If the
// Server is closed meanwhile it drops the connection like a dying upstream.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		return true
	}
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return true
	case <-ctx.Done():
		return false
	case <-s.closed:
		panic(http.ErrAbortHandler)
	}
}
