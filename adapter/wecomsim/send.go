package wecomsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	maxContentBytes    = 2048
	defaultDupInterval = 1800 * time.Second
	maxDupInterval     = 4 * time.Hour
	maxBodyBytes       = 1 << 20
	// pruneDupAt bounds lastDelivered for long-running simulations: past
	// this size, entries older than any possible interval are forgotten.
	// The next prune waits until the map has doubled again, so a map of
	// fresh entries is not scanned on every send.
	pruneDupAt = 4096
)

// sendRequest is the body of message/send. Only text, markdown and the
// media types are simulated.
type sendRequest struct {
	ToUser                 string          `json:"touser"`
	ToParty                string          `json:"toparty"`
	ToTag                  string          `json:"totag"`
	MsgType                string          `json:"msgtype"`
	AgentID                json.RawMessage `json:"agentid"` // number or numeric string: silenceper sends a string
	Text                   *contentField   `json:"text"`
	Markdown               *contentField   `json:"markdown"`
	Image                  *mediaField     `json:"image"`
	Voice                  *mediaField     `json:"voice"`
	Video                  *mediaField     `json:"video"`
	File                   *mediaField     `json:"file"`
	EnableDuplicateCheck   flexInt         `json:"enable_duplicate_check"`
	DuplicateCheckInterval flexInt         `json:"duplicate_check_interval"`
}

type contentField struct {
	Content string `json:"content"`
}

type mediaField struct {
	MediaID string `json:"media_id"`
}

// flexInt accepts 1 and "1" alike: WeCom is lenient about both, and SDKs
// differ in which they send.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if len(b) == 0 || string(b) == "null" {
		*f = 0
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	*f = flexInt(n)
	return err
}

type dupKey struct {
	agentID int64
	user    string
	msgType string
	content string
}

// send answers POST /cgi-bin/message/send?access_token=.
//
// Checks run in WeCom's order as far as it is observable: the token first,
// then the body. Choices where WeCom's answer is not documented:
//   - a body that is not JSON: 40058. WeCom may well say 47001 ("data
//     format error") instead; both mean "fix the request", not "retry".
//   - agentid of another app: 301002, what WeCom says for a token of app A
//     used with app B ("not allow operate another agent with this accesstoken").
//   - no touser: 81013. Departments and tags are not simulated, so toparty
//     and totag never count as recipients.
//   - invalid users (SetInvalidUser): with at least one valid recipient the
//     answer is errcode 0 plus "invaliduser":"a|b" (lower-cased, as WeCom
//     does) and only the valid ones receive it; with none, 81013 plus the same
//     invaliduser field.
//   - content over 2048 bytes: 45002, for text too, although WeCom's docs say
//     long text is truncated; refusing catches a splitter bug that truncation
//     would hide.
//   - a duplicate-check drop is answered like a delivery, with a new msgid.
func (s *Server) send(w http.ResponseWriter, r *http.Request, body []byte) {
	app, ok := s.postWithToken(w, r)
	if !ok {
		return
	}

	var req sendRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.reject(w, r, 40058, "invalid Request Parameter")
		return
	}

	if len(req.AgentID) == 0 || string(req.AgentID) == "null" {
		s.reject(w, r, 41011, "missing agentid")
		return
	}
	agentID, err := strconv.ParseInt(string(bytes.Trim(req.AgentID, `"`)), 10, 64)
	if err != nil || agentID <= 0 {
		s.reject(w, r, 40056, "invalid agentid")
		return
	}
	if agentID != s.apps[app].AgentID {
		s.reject(w, r, 301002, "not allow operate another agent with this accesstoken.")
		return
	}

	content, errcode, errmsg := messageContent(&req)
	if errcode != 0 {
		s.reject(w, r, errcode, errmsg)
		return
	}

	var users []string
	for _, u := range strings.Split(req.ToUser, "|") {
		if u = strings.TrimSpace(u); u != "" {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		s.reject(w, r, 81013, "user & party & tag all invalid")
		return
	}

	interval := time.Duration(req.DuplicateCheckInterval) * time.Second
	if interval <= 0 {
		interval = defaultDupInterval
	}
	interval = min(interval, maxDupInterval)
	dupCheck := req.EnableDuplicateCheck == 1
	msgID := randomString(48)

	s.mu.Lock()
	var valid, invalid []string
	for _, u := range users {
		if s.invalidUsers[strings.ToLower(u)] {
			invalid = append(invalid, strings.ToLower(u))
		} else {
			valid = append(valid, u)
		}
	}
	if len(valid) == 0 {
		s.mu.Unlock()
		s.rejectWith(w, r, 81013, "user & party & tag all invalid",
			map[string]any{"invaliduser": strings.Join(invalid, "|")})
		return
	}
	now := s.now()
	s.pruneDuplicates(now)
	delivered := false
	for _, u := range valid {
		m := Sent{ToUser: u, AgentID: agentID, MsgType: req.MsgType, Content: content,
			MsgID: msgID, At: now, DuplicateCheck: dupCheck}
		key := dupKey{agentID, strings.ToLower(u), req.MsgType, content}
		if last, seen := s.lastDelivered[key]; dupCheck && seen && now.Sub(last) < interval {
			// WeCom answers success and shows nothing; the window runs from
			// the last delivery, so drops do not extend it.
			s.dropped = append(s.dropped, m)
			continue
		}
		s.lastDelivered[key] = now
		s.delivered = append(s.delivered, m)
		delivered = true
	}
	if delivered {
		close(s.deliveredCh)
		s.deliveredCh = make(chan struct{})
	}
	s.mu.Unlock()

	resp := map[string]any{"errcode": 0, "errmsg": "ok", "msgid": msgID}
	if len(invalid) > 0 {
		resp["invaliduser"] = strings.Join(invalid, "|")
	}
	writeJSON(w, resp)
}

// messageContent returns what the user would see for req's msgtype.
func messageContent(req *sendRequest) (content string, errcode int, errmsg string) {
	switch req.MsgType {
	case "text", "markdown":
		f := req.Text
		if req.MsgType == "markdown" {
			f = req.Markdown
		}
		switch {
		case f == nil || f.Content == "":
			return "", 44004, "empty content"
		case len(f.Content) > maxContentBytes:
			return "", 45002, "content size out of limit"
		}
		return f.Content, 0, ""
	case "image", "voice", "video", "file":
		f := map[string]*mediaField{"image": req.Image, "voice": req.Voice, "video": req.Video, "file": req.File}[req.MsgType]
		if f == nil || f.MediaID == "" {
			return "", 40007, "invalid media_id"
		}
		return f.MediaID, 0, ""
	}
	return "", 40008, "invalid message type"
}

// pruneDuplicates forgets deliveries too old to matter to any duplicate
// check. s.mu must be held.
func (s *Server) pruneDuplicates(now time.Time) {
	if len(s.lastDelivered) < max(s.pruneAt, pruneDupAt) {
		return
	}
	for k, at := range s.lastDelivered {
		if now.Sub(at) >= maxDupInterval {
			delete(s.lastDelivered, k)
		}
	}
	s.pruneAt = 2 * len(s.lastDelivered)
}
