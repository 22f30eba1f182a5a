package wecomsim

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"time"
)

// The kf endpoints. Each handler runs with s.mu held and answers the
// success body, or the errcode and errmsg to refuse with.

const badParam = "invalid Request Parameter"

// serveKF answers the kf API api after the common checks of serveHTTP
// (outage, latency, injected faults).
func (s *Server) serveKF(w http.ResponseWriter, r *http.Request, api string, body []byte) {
	app, ok := s.postWithToken(w, r)
	if !ok {
		return
	}
	handle := map[string]func(int, []byte) (map[string]any, int, string){
		APIKFSyncMsg:        s.kfSyncMsgLocked,
		APIKFSendMsg:        s.kfSendMsgLocked,
		APIKFSendMsgOnEvent: s.kfSendMsgOnEventLocked,
		APIKFBatchGet:       s.kfBatchGetLocked,
		APIKFServiceState:   s.kfServiceStateLocked,
	}[api]
	s.mu.Lock()
	s.kf.apiCalls[api]++
	answer, errcode, errmsg := handle(app, body)
	s.mu.Unlock()
	if errcode != 0 {
		s.reject(w, r, errcode, errmsg)
		return
	}
	answer["errcode"], answer["errmsg"] = 0, "ok"
	writeJSON(w, answer)
}

// accountLocked returns the account openKfID if the app may drive it.
func (s *Server) accountLocked(app int, openKfID string) (*kfAccount, int, string) {
	a := s.kf.accounts[openKfID]
	if a == nil || a.app != app {
		return nil, KFErrInvalidOpenKfID, "invalid open_kfid"
	}
	return a, 0, ""
}

// kfSyncMsgLocked answers kf/sync_msg: a page of at most limit messages of
// the last KFHistory from the cursor's place (the oldest readable one
// without a cursor). A token, when given, must be a callback Token of this
// account younger than KFTokenLifetime (95007); none is accepted too, as
// WeCom does with a stricter rate limit the simulator does not play.
func (s *Server) kfSyncMsgLocked(app int, body []byte) (map[string]any, int, string) {
	var req struct {
		Cursor   string `json:"cursor"`
		Token    string `json:"token"`
		Limit    int    `json:"limit"`
		OpenKfID string `json:"open_kfid"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, KFErrBadParam, badParam
	}
	s.kf.syncCalls[req.OpenKfID]++
	defer s.changedLocked()
	a, code, msg := s.accountLocked(app, req.OpenKfID)
	if code != 0 {
		return nil, code, msg
	}
	now := s.now()
	if req.Token != "" {
		issued, ok := a.tokens[req.Token]
		if !ok || now.Sub(issued) >= KFTokenLifetime {
			return nil, KFErrInvalidMsgToken, "invalid msg token"
		}
	}
	pos := 0
	if req.Cursor != "" {
		c, ok := s.kf.cursors[req.Cursor]
		if !ok || c.account != req.OpenKfID {
			return nil, KFErrBadParam, "invalid cursor"
		}
		pos = c.pos
	}
	limit := req.Limit
	if limit <= 0 || limit > kfMaxLimit {
		limit = kfMaxLimit
	}
	// Older than the history window: unreadable, whatever the cursor says.
	for pos < len(a.log) && now.Sub(a.log[pos].at) > KFHistory {
		pos++
	}
	list := []map[string]any{}
	if s.kf.emptyNext > 0 {
		s.kf.emptyNext--
		return map[string]any{"next_cursor": s.kfCursorLocked(req.OpenKfID, pos), "has_more": 1, "msg_list": list}, 0, ""
	}
	end := min(pos+limit, len(a.log))
	for _, m := range a.log[pos:end] {
		list = append(list, m.body)
	}
	more := 0
	if end < len(a.log) {
		more = 1
	}
	answer := map[string]any{"has_more": more, "msg_list": list}
	if s.kf.noCursor > 0 {
		s.kf.noCursor--
	} else {
		answer["next_cursor"] = s.kfCursorLocked(req.OpenKfID, end)
	}
	return answer, 0, ""
}

// kfCursorLocked returns the opaque cursor for pos, the same one each time,
// so that the cursors a long simulation hands out stay as many as the
// messages it stored.
func (s *Server) kfCursorLocked(account string, pos int) string {
	at := kfCursor{account: account, pos: pos}
	if c, ok := s.kf.cursorOf[at]; ok {
		return c
	}
	c := randomString(15) // 20 characters, like WeCom's "4gw7MepFLfgF2VC5npN"
	s.kf.cursors[c] = at
	s.kf.cursorOf[at] = c
	return c
}

var kfMsgIDPattern = regexp.MustCompile(`^[0-9a-zA-Z_-]+$`)

// kfOutbound is what send_msg and send_msg_on_event share: the simulator
// sends text only.
type kfOutbound struct {
	MsgID   string        `json:"msgid"`
	MsgType string        `json:"msgtype"`
	Text    *contentField `json:"text"`
}

// check refuses what send_msg refuses in any state: a type other than text
// (40008 here), empty text (44004), over 2048 bytes (45002: refused, like
// message/send here, rather than truncated as WeCom does, to catch a
// splitter bug truncation would hide), a malformed msgid.
func (o kfOutbound) check() (int, string) {
	if o.MsgType != "text" {
		return KFErrBadMsgType, "invalid message type (the simulator sends text only)"
	}
	if _, code, msg := messageContent(&sendRequest{MsgType: o.MsgType, Text: o.Text}); code != 0 {
		return code, msg
	}
	if o.MsgID != "" && (len(o.MsgID) > kfMaxMsgIDBytes || !kfMsgIDPattern.MatchString(o.MsgID)) {
		return KFErrBadParam, "invalid msgid"
	}
	return 0, ""
}

// deliverLocked records o as received by the customer, under o's msgid (or
// a new one), and answers the msgid.
func (s *Server) deliverLocked(a *kfAccount, customer string, o kfOutbound, now time.Time, code string) map[string]any {
	id := o.MsgID
	if id == "" {
		id = randomString(24)
	}
	a.msgIDs[id] = true
	s.kf.sent = append(s.kf.sent, KFSent{OpenKfID: a.OpenKfID, ToUser: customer, MsgID: id, MsgType: o.MsgType,
		Content: o.Text.Content, At: now, OnEvent: code != "", Code: code})
	s.changedLocked()
	return map[string]any{"msgid": id}
}

// kfSendMsgLocked answers kf/send_msg. Checks, in order: body, account,
// content and msgid format, customer known to the account (40096), msgid
// not used before on the account (95033), state 0 or 1 (95018), the 48 h
// window (95002), the 5-message budget (95001). The duplicate comes before
// the rest, so a part re-sent after a crash learns it was delivered even
// once the budget is used up. A send from state 0 moves the conversation to 1.
func (s *Server) kfSendMsgLocked(app int, body []byte) (map[string]any, int, string) {
	var req struct {
		kfOutbound
		ToUser   string `json:"touser"`
		OpenKfID string `json:"open_kfid"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, KFErrBadParam, badParam
	}
	a, code, msg := s.accountLocked(app, req.OpenKfID)
	if code != 0 {
		return nil, code, msg
	}
	if code, msg := req.check(); code != 0 {
		return nil, code, msg
	}
	c := a.customers[req.ToUser]
	now := s.now()
	switch {
	case c == nil:
		return nil, KFErrInvalidCustomer, "invalid external userid"
	case a.msgIDs[req.MsgID]:
		return nil, KFErrDuplicateMsgID, "duplicate msgid"
	case c.state != KFStateNew && c.state != KFStateAssistant:
		return nil, KFErrSessionNotOurs, "send msg session status invalid"
	case !recent(c.lastMessage, now):
		return nil, KFErrOutsideWindow, "send msg time limit"
	case c.sentSince >= KFMaxParts:
		return nil, KFErrOverLimit, "send msg count limit"
	}
	c.sentSince++
	c.state = KFStateAssistant
	return s.deliverLocked(a, req.ToUser, req.kfOutbound, now, ""), 0, ""
}

// kfSendMsgOnEventLocked answers kf/send_msg_on_event: one text per code,
// within KFWelcomeLifetime of the event. Whether these count toward the 5
// is not documented; here they do not.
func (s *Server) kfSendMsgOnEventLocked(app int, body []byte) (map[string]any, int, string) {
	var req struct {
		kfOutbound
		Code string `json:"code"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, KFErrBadParam, badParam
	}
	code := s.kf.codes[req.Code]
	if code == nil {
		return nil, KFErrBadParam, "invalid code"
	}
	a, errcode, errmsg := s.accountLocked(app, code.account)
	if errcode != 0 {
		return nil, errcode, errmsg
	}
	if errcode, errmsg := req.check(); errcode != 0 {
		return nil, errcode, errmsg
	}
	now := s.now()
	switch {
	case code.used:
		return nil, KFErrBadParam, "code already used"
	case now.Sub(code.issued) >= KFWelcomeLifetime:
		return nil, KFErrBadParam, "code expired"
	case a.msgIDs[req.MsgID]:
		return nil, KFErrDuplicateMsgID, "duplicate msgid"
	}
	code.used = true
	a.customer(code.customer).lastWelcome = now
	return s.deliverLocked(a, code.customer, req.kfOutbound, now, req.Code), 0, ""
}

// kfBatchGetLocked answers kf/customer/batchget: customers who appeared on
// an account of the calling app are listed (nickname from SetKFNickname,
// else made from the id), the others are invalid.
func (s *Server) kfBatchGetLocked(app int, body []byte) (map[string]any, int, string) {
	var req struct {
		IDs []string `json:"external_userid_list"`
	}
	if json.Unmarshal(body, &req) != nil || len(req.IDs) == 0 || len(req.IDs) > kfMaxBatch {
		return nil, KFErrBadParam, "invalid external_userid_list"
	}
	known := map[string]bool{}
	for _, a := range s.kf.accounts {
		if a.app == app {
			for id := range a.customers {
				known[id] = true
			}
		}
	}
	list, invalid := []map[string]any{}, []string{}
	for _, id := range req.IDs {
		if !known[id] {
			invalid = append(invalid, id)
			continue
		}
		nick := s.kf.nicknames[id]
		if nick == "" {
			nick = "客户" + id[max(0, len(id)-4):]
		}
		list = append(list, map[string]any{"external_userid": id, "nickname": nick,
			"avatar": "https://wecomsim.invalid/avatar/" + id, "gender": 0, "unionid": ""})
	}
	sort.Strings(invalid)
	s.kf.batchGets++
	return map[string]any{"customer_list": list, "invalid_external_userid": invalid}, 0, ""
}

// kfServiceStateLocked answers kf/service_state/get: the conversation's
// state, with the receptionist's id in state 3. A customer who never
// appeared on the account is in state 4 (no conversation).
func (s *Server) kfServiceStateLocked(app int, body []byte) (map[string]any, int, string) {
	var req struct {
		OpenKfID       string `json:"open_kfid"`
		ExternalUserID string `json:"external_userid"`
	}
	if json.Unmarshal(body, &req) != nil || req.ExternalUserID == "" {
		return nil, KFErrBadParam, badParam
	}
	a, code, msg := s.accountLocked(app, req.OpenKfID)
	if code != 0 {
		return nil, code, msg
	}
	c := a.customers[req.ExternalUserID]
	if c == nil {
		return map[string]any{"service_state": KFStateEnded}, 0, ""
	}
	answer := map[string]any{"service_state": c.state}
	if c.state == KFStateHuman {
		answer["servicer_userid"] = c.servicerUser
	}
	return answer, 0, ""
}
