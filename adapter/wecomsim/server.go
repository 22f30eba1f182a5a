package wecomsim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The API names accepted by FailNext.
const (
	APIGetToken = "gettoken"
	APISend     = "send"
)

const defaultTokenLifetime = 7200 * time.Second

// App is one self-built application as the admin console shows it. Each app
// has its own secret and therefore its own access tokens.
type App struct {
	CorpID  string
	AgentID int64
	Secret  string
}

// Options configures a Server. The zero value is a server with no apps, where
// every gettoken answers 40013.
type Options struct {
	Apps []App

	// AIBots are the AI bots that may subscribe on the long connection.
	AIBots []AIBot

	// KFAccounts are the 微信客服 accounts managed by API; see kf.go.
	KFAccounts []KFAccount

	// TokenLifetime defaults to 7200s. gettoken reports it in whole seconds.
	TokenLifetime time.Duration

	// SameTokenWhileValid reproduces what older WeCom docs describe: a repeat
	// gettoken while the app's token is still valid answers the same token
	// with a full, fresh expires_in, yet the token still dies at its original
	// expiry. A cache that trusts the new expires_in uses a dead token.
	SameTokenWhileValid bool

	// Now is the clock for token expiry, the duplicate check and Sent.At, so
	// tests can move time instead of sleeping. Defaults to time.Now. It is
	// called with the server's lock held and must not call back into it.
	Now func() time.Time
}

// Sent is one message as a recipient's WeCom client would see it. A send to
// "a|b" yields one Sent per recipient, sharing the MsgID.
type Sent struct {
	ToUser         string
	AgentID        int64
	MsgType        string
	Content        string // the text or markdown; media_id for media messages
	MsgID          string
	At             time.Time
	DuplicateCheck bool // the request asked for enable_duplicate_check
}

// Server simulates WeCom's server API. All methods are safe for concurrent use.
type Server struct {
	apps      []App
	now       func() time.Time
	sameToken bool

	mu            sync.Mutex
	tokenLifetime time.Duration
	tokens        map[string]*token // every token ever issued, so old ones answer 42001 rather than 40014
	current       []*token          // newest token per app, indexed like apps
	fetches       []int             // tokens issued per app, indexed like apps
	totalFetches  int
	sendCalls     int
	rejected      map[int]int
	delivered     []Sent
	dropped       []Sent
	deliveredCh   chan struct{} // closed and replaced on every delivery; WaitDelivered waits on it
	lastDelivered map[dupKey]time.Time
	pruneAt       int             // lastDelivered's size that triggers the next prune; see pruneDupAt
	invalidUsers  map[string]bool // lower-cased: WeCom user IDs are case-insensitive
	faults        map[string][]fault
	down          bool
	latency       time.Duration
	ai            *aibotState // the AI bot side: response_urls and long connections
	kf            *kfState    // the 微信客服 side: accounts, customers, cursors
	media         *mediaState // media/get files and AI bot media URLs; see mediaLocked
}

type token struct {
	value   string
	app     int
	expires time.Time
	revoked bool
}

type fault struct {
	errcode int
	errmsg  string
	left    int
}

// New returns a simulator for opts.Apps. Apps should have distinct AgentIDs;
// the per-agent accessors look apps up by AgentID.
func New(opts Options) *Server {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	lifetime := opts.TokenLifetime
	if lifetime <= 0 {
		lifetime = defaultTokenLifetime
	}
	apps := append([]App(nil), opts.Apps...)
	return &Server{
		apps:          apps,
		now:           now,
		sameToken:     opts.SameTokenWhileValid,
		tokenLifetime: lifetime,
		tokens:        make(map[string]*token),
		current:       make([]*token, len(apps)),
		fetches:       make([]int, len(apps)),
		rejected:      make(map[int]int),
		deliveredCh:   make(chan struct{}),
		lastDelivered: make(map[dupKey]time.Time),
		invalidUsers:  make(map[string]bool),
		faults:        make(map[string][]fault),
		ai:            newAIBotState(opts.AIBots),
		kf:            newKFState(opts.KFAccounts, apps),
	}
}

// Handler serves GET .../cgi-bin/gettoken, POST .../cgi-bin/message/send and
// the kf APIs (kf/sync_msg, kf/send_msg, kf/send_msg_on_event,
// kf/customer/batchget) under any path prefix, so it can sit behind httptest.NewServer or be mounted
// inside a bigger mux. It also serves the read-only InfoPath and
// DeliveredPath, which WeCom does not have, and the AI bot's
// AIBotResponsePath and AIBotWSPath.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if s.inspect(w, r) || s.serveAIBot(w, r) {
		return
	}
	var api string
	switch {
	case strings.HasSuffix(r.URL.Path, "/cgi-bin/gettoken"):
		api = APIGetToken
	case strings.HasSuffix(r.URL.Path, "/cgi-bin/message/send"):
		api = APISend
	case kfAPI(r.URL.Path) != "":
		api = kfAPI(r.URL.Path)
	case strings.HasSuffix(r.URL.Path, "/cgi-bin/"+APIMediaGet):
		api = APIMediaGet
	default:
		http.NotFound(w, r)
		return
	}

	s.mu.Lock()
	switch api {
	case APIGetToken:
		s.totalFetches++
	case APISend:
		s.sendCalls++
	}
	latency := s.latency
	s.mu.Unlock()

	// Reading the body first lets net/http notice a client that gives up
	// during the latency below, so its request ends instead of lingering.
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return // the client left mid-body
	}

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	s.mu.Lock()
	down := s.down
	f, faulted := s.takeFault(api)
	s.mu.Unlock()
	if down {
		// WeCom's gateway answers outages with a bare 503, not with JSON.
		http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
		return
	}
	if faulted {
		s.reject(w, r, f.errcode, f.errmsg)
		return
	}

	switch api {
	case APIGetToken:
		s.getToken(w, r)
	case APISend:
		s.send(w, r, body)
	case APIMediaGet:
		s.mediaGet(w, r)
	default:
		s.serveKF(w, r, api, body)
	}
}

// reject answers an error the way WeCom does: HTTP 200 with errcode/errmsg.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, errcode int, errmsg string) {
	s.rejectWith(w, r, errcode, errmsg, nil)
}

// rejectWith adds extra fields (such as invaliduser) to the error answer.
func (s *Server) rejectWith(w http.ResponseWriter, r *http.Request, errcode int, errmsg string, extra map[string]any) {
	s.mu.Lock()
	s.rejected[errcode]++
	now := s.now()
	s.mu.Unlock()

	body := map[string]any{"errcode": errcode, "errmsg": decorate(errmsg, errcode, now, r)}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, body)
}

// decorate makes errmsg look like WeCom's, which appends a hint, the caller's
// IP and a link; code that matches errmsg exactly instead of errcode breaks here
// as it would in production.
func decorate(errmsg string, errcode int, now time.Time, r *http.Request) string {
	if strings.Contains(errmsg, "more info at") {
		return errmsg // already in WeCom's shape, e.g. an injected 60020
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return fmt.Sprintf("%s, hint: [%d_%s], from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
		errmsg, now.Unix(), randomHex(16), ip, errcode)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	// Encoding maps and plain structs cannot fail; a write error means the
	// client left, and there is nobody to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// Delivered returns the messages delivered so far, in arrival order.
func (s *Server) Delivered() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.delivered...)
}

// DeliveredCount is how many messages were delivered so far: the length of
// Delivered without copying them.
func (s *Server) DeliveredCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.delivered)
}

// DeliveredSince returns the messages delivered after the first n, in
// arrival order, so a poller that remembers how many it has seen copies only
// the new ones instead of everything on each poll.
func (s *Server) DeliveredSince(n int) []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.delivered[min(max(n, 0), len(s.delivered)):]...)
}

// Dropped returns the messages the duplicate check swallowed: answered
// errcode 0 but never shown to the user.
func (s *Server) Dropped() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.dropped...)
}

// WaitDelivered blocks until at least n messages were delivered or ctx is
// done. On ctx's end it returns what was delivered so far with ctx's error,
// so a failing test can show how far the service got.
func (s *Server) WaitDelivered(ctx context.Context, n int) ([]Sent, error) {
	for {
		s.mu.Lock()
		if len(s.delivered) >= n {
			out := append([]Sent(nil), s.delivered...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.deliveredCh
		s.mu.Unlock()

		select {
		case <-ch:
		case <-ctx.Done():
			return s.Delivered(), ctx.Err()
		}
	}
}

// TokenFetches counts the tokens issued to the app with agentID, a repeat
// answer under SameTokenWhileValid included. Failed fetches are not counted
// here; see TotalTokenFetches.
func (s *Server) TokenFetches(agentID int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i, a := range s.apps {
		if a.AgentID == agentID {
			n += s.fetches[i]
		}
	}
	return n
}

// TotalTokenFetches counts every gettoken request, refused, faulted and 503
// ones included: that is the number WeCom's abuse limits look at.
func (s *Server) TotalTokenFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalFetches
}

// SendCalls counts every message/send request, refused, faulted and 503 ones
// included.
func (s *Server) SendCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sendCalls
}

// Rejected maps errcode to the number of API calls answered with it. Partial
// failures (errcode 0 with invaliduser) and 503s are not rejections.
func (s *Server) Rejected() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int, len(s.rejected))
	for k, v := range s.rejected {
		out[k] = v
	}
	return out
}

// CurrentToken returns the newest token issued to the app with agentID, even
// if the clock has passed its expiry, so a test can present an expired token.
// It is empty before the first fetch and after RevokeTokens.
func (s *Server) CurrentToken(agentID int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range s.apps {
		if a.AgentID == agentID && s.current[i] != nil && !s.current[i].revoked {
			return s.current[i].value
		}
	}
	return ""
}

// randomString returns n random bytes in URL-safe base64, the alphabet
// WeCom's tokens and message IDs use.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
