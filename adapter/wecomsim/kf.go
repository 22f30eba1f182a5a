package wecomsim

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The 微信客服 (kf) side of the simulator: customers (external WeChat users)
// write to kf accounts; each news is announced to the owning app's callback
// URL with Event kf_msg_or_event and a Token, and the service pulls it with
// kf/sync_msg and answers with kf/send_msg, within WeCom's limits
// (KF.md §9): 5 messages per customer message, 48 h after the customer's
// last message, msgid unique per account, a Token valid 10 minutes, 3 days
// of readable history, a welcome_code valid 20 s and good for one send.

// The kf API names accepted by FailNext.
const (
	APIKFSyncMsg        = "kf/sync_msg"
	APIKFSendMsg        = "kf/send_msg"
	APIKFSendMsgOnEvent = "kf/send_msg_on_event"
	APIKFBatchGet       = "kf/customer/batchget"
	APIKFServiceState   = "kf/service_state/get"
)

// Service states of a kf conversation (kf/service_state/get).
const (
	KFStateNew       = 0 // the customer wrote; nobody has answered
	KFStateAssistant = 1 // the API (our service) is answering
	KFStateQueue     = 2
	KFStateHuman     = 3 // a receptionist has it
	KFStateEnded     = 4
)

// Limits the simulator enforces (KF.md §9).
const (
	KFMaxParts        = 5
	KFReplyWindow     = 48 * time.Hour
	KFHistory         = 72 * time.Hour
	KFTokenLifetime   = 10 * time.Minute
	KFWelcomeLifetime = 20 * time.Second
	kfMaxLimit        = 1000
	kfMaxBatch        = 100
	kfMaxMsgIDBytes   = 32
)

// Errcodes the kf endpoints answer. The 95xxx codes and 40096/44004 are
// WeCom's documented ones. Where WeCom documents no code the simulator picks
// one, and a service must treat any non-zero errcode it does not know as a
// failure rather than match on these:
//   - KFErrDuplicateMsgID (95033): a msgid the account has already used.
//     WeCom only says such a send "返回错误"; 95033 is what LangBot treats as
//     "duplicate msgid" (KF.md §13, unconfirmed). It is checked before the
//     state, window and budget, so a part re-sent after a crash is told it
//     was already sent even when its budget is used up meanwhile.
//   - KFErrBadParam (40058): a body that is not JSON, an unknown cursor, a
//     malformed msgid, more than 100 ids for batchget, and an unknown,
//     used or expired event code (WeCom publishes no code for those).
const (
	KFErrInvalidOpenKfID = 95000
	KFErrOverLimit       = 95001
	KFErrOutsideWindow   = 95002
	KFErrInvalidMsgToken = 95007
	KFErrSessionNotOurs  = 95018
	KFErrDuplicateMsgID  = 95033
	KFErrInvalidCustomer = 40096
	KFErrEmptyContent    = 44004
	KFErrContentTooLong  = 45002
	KFErrBadMsgType      = 40008
	KFErrBadParam        = 40058
)

// KFAccount is a 微信客服 account managed by API, as the admin console lists
// it under the app (AgentID) granted the customer-service API: that app's
// access tokens may drive it, and its callback receives the account's news.
type KFAccount struct {
	OpenKfID string
	AgentID  int64
	Name     string
}

// KFSent is one message a customer received from the service.
type KFSent struct {
	OpenKfID string
	ToUser   string // external_userid
	MsgID    string
	MsgType  string
	Content  string
	At       time.Time
	OnEvent  bool   // sent with send_msg_on_event
	Code     string // the event code, for OnEvent
}

type kfState struct {
	accounts  map[string]*kfAccount
	callbacks map[int64]*Callback // per AgentID
	cursors   map[string]kfCursor
	cursorOf  map[kfCursor]string
	codes     map[string]*kfCode
	nicknames map[string]string
	sent      []KFSent
	syncCalls map[string]int
	apiCalls  map[string]int // by API, past the access token check
	// batchGets counts the kf/customer/batchget calls answered.
	batchGets int
	emptyNext int // sync_msg pages to answer empty with has_more=1
	noCursor  int // sync_msg pages to answer without next_cursor
}

type kfAccount struct {
	KFAccount
	app       int
	log       []kfMessage // in send_time order: everything sync_msg can return
	tokens    map[string]time.Time
	lastToken string
	customers map[string]*kfCustomer
	msgIDs    map[string]bool // msgids used by sends on this account
}

type kfMessage struct {
	at   time.Time
	body map[string]any // the msg_list entry
}

type kfCustomer struct {
	state        int
	lastMessage  time.Time // the customer's last message; zero: never wrote
	lastWelcome  time.Time
	sentSince    int // sends since lastMessage
	servicerUser string
}

type kfCursor struct {
	account string
	pos     int
}

type kfCode struct {
	account, customer string
	issued            time.Time
	used              bool
}

func newKFState(accounts []KFAccount, apps []App) *kfState {
	k := &kfState{
		accounts:  make(map[string]*kfAccount),
		callbacks: make(map[int64]*Callback),
		cursors:   make(map[string]kfCursor),
		cursorOf:  make(map[kfCursor]string),
		codes:     make(map[string]*kfCode),
		nicknames: make(map[string]string),
		syncCalls: make(map[string]int),
		apiCalls:  make(map[string]int),
	}
	for _, a := range accounts {
		app := -1
		for i, p := range apps {
			if p.AgentID == a.AgentID {
				app = i
			}
		}
		k.accounts[a.OpenKfID] = &kfAccount{KFAccount: a, app: app, tokens: make(map[string]time.Time),
			customers: make(map[string]*kfCustomer), msgIDs: make(map[string]bool)}
	}
	return k
}

// SetKFCallback makes the simulator announce the news of every kf account of
// the app agentID to cb, as the admin console's callback URL does. Without
// one, messages are still stored for sync_msg but announced to nobody: a
// lost callback.
func (s *Server) SetKFCallback(agentID int64, cb *Callback) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kf.callbacks[agentID] = cb
}

// KFCallbackXML is the plaintext of a kf_msg_or_event callback, field for
// field as KF.md §2 shows it: no FromUserName, no MsgId, no AgentID.
func KFCallbackXML(corpID string, createTime int64, token, openKfID string) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName>%s</ToUserName><CreateTime>%d</CreateTime>"+
		"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"+
		"<Token>%s</Token><OpenKfId>%s</OpenKfId></xml>",
		cdata(corpID), createTime, cdata(token), cdata(openKfID))
}

// KFCustomerWrites stores a text from the customer (origin 3) and announces
// it. The customer's budget goes back to 5 messages and the 48 h window
// restarts; an ended conversation becomes new (state 0). It returns the
// message's msgid; err is set when the callback was not answered with 200.
func (s *Server) KFCustomerWrites(ctx context.Context, openKfID, externalUserID, text string) (string, error) {
	return s.kfCustomerMessage(ctx, openKfID, externalUserID, "text", map[string]any{"content": text})
}

// kfCustomerMessage stores and announces a message of msgType with body
// from the customer (origin 3): their budget goes back to 5 messages, the
// 48 h window restarts and an ended conversation becomes new.
func (s *Server) kfCustomerMessage(ctx context.Context, openKfID, externalUserID, msgType string, body map[string]any) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		c := a.customer(externalUserID)
		c.lastMessage, c.sentSince = now, 0
		if c.state == KFStateEnded {
			c.state = KFStateNew
		}
		return map[string]any{"msgid": randomString(19), "open_kfid": openKfID, "external_userid": externalUserID,
			"send_time": now.Unix(), "origin": 3, "msgtype": msgType, msgType: body}, nil
	})
}

// KFCustomerSendsImage stores an image from the customer (origin 3): its
// bytes for media/get (AddMedia) and a message of msgtype image with their
// media_id, announced like KFCustomerWrites. It returns the message's msgid.
func (s *Server) KFCustomerSendsImage(ctx context.Context, openKfID, externalUserID string, data []byte) (string, error) {
	return s.kfCustomerMessage(ctx, openKfID, externalUserID, "image", map[string]any{"media_id": s.AddMedia(data)})
}

// KFCustomerEnters stores an enter_session event (the customer opened the
// chat from a kf link with scene and sceneParam) and announces it. When the
// customer has neither written nor been welcomed in the last 48 h, the event
// carries a welcome_code, returned here, valid KFWelcomeLifetime for one
// send_msg_on_event.
func (s *Server) KFCustomerEnters(ctx context.Context, openKfID, externalUserID, scene, sceneParam string) (welcomeCode string, err error) {
	_, err = s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		c := a.customer(externalUserID)
		ev := map[string]any{"event_type": "enter_session", "open_kfid": openKfID, "external_userid": externalUserID,
			"scene": scene, "scene_param": sceneParam}
		if !recent(c.lastMessage, now) && !recent(c.lastWelcome, now) {
			welcomeCode = randomString(24)
			s.kf.codes[welcomeCode] = &kfCode{account: openKfID, customer: externalUserID, issued: now}
			ev["welcome_code"] = welcomeCode
		}
		return kfEvent(now, ev), nil
	})
	return welcomeCode, err
}

// recent reports whether t is set and within the reply window of now.
func recent(t, now time.Time) bool { return !t.IsZero() && now.Sub(t) < KFReplyWindow }

// KFReceptionistWrites stores a text a receptionist typed in the WeCom
// client (origin 5, with servicer_userid) and announces it.
func (s *Server) KFReceptionistWrites(ctx context.Context, openKfID, externalUserID, servicerUserID, text string) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		a.customer(externalUserID)
		return map[string]any{"msgid": randomString(19), "open_kfid": openKfID, "external_userid": externalUserID,
			"send_time": now.Unix(), "origin": 5, "servicer_userid": servicerUserID, "msgtype": "text",
			"text": map[string]any{"content": text}}, nil
	})
}

// KFCustomerRecalls stores a user_recall_msg event for the customer's
// message msgID and announces it.
func (s *Server) KFCustomerRecalls(ctx context.Context, openKfID, externalUserID, msgID string) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		a.customer(externalUserID)
		return kfEvent(now, map[string]any{"event_type": "user_recall_msg", "open_kfid": openKfID,
			"external_userid": externalUserID, "recall_msgid": msgID}), nil
	})
}

// KFSendFails stores a msg_send_fail event for the service's message
// failMsgID to the customer (delivery failed after send_msg said ok) and
// announces it. failType is WeCom's fail_type (6: over the budget, 10: the
// customer refuses messages…).
func (s *Server) KFSendFails(ctx context.Context, openKfID, externalUserID, failMsgID string, failType int) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		a.customer(externalUserID)
		return kfEvent(now, map[string]any{"event_type": "msg_send_fail", "open_kfid": openKfID,
			"external_userid": externalUserID, "fail_msgid": failMsgID, "fail_type": failType}), nil
	})
}

// KFHandOver gives the conversation to receptionist servicerUserID (state 3)
// with a session_status_change event (change_type 1) and announces it; the
// service's sends to this customer answer 95018 from now on.
func (s *Server) KFHandOver(ctx context.Context, openKfID, externalUserID, servicerUserID string) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		c := a.customer(externalUserID)
		c.state, c.servicerUser = KFStateHuman, servicerUserID
		return kfEvent(now, map[string]any{"event_type": "session_status_change", "open_kfid": openKfID,
			"external_userid": externalUserID, "change_type": 1, "new_servicer_userid": servicerUserID,
			"msg_code": randomString(24)}), nil
	})
}

// KFEndSession ends the conversation (state 4) with a session_status_change
// event (change_type 3, with a closing msg_code) and announces it; the
// customer's next message makes it new (state 0) again.
func (s *Server) KFEndSession(ctx context.Context, openKfID, externalUserID string) (string, error) {
	return s.kfAppend(ctx, openKfID, func(a *kfAccount, now time.Time) (map[string]any, error) {
		c := a.customer(externalUserID)
		old := c.servicerUser
		c.state, c.servicerUser = KFStateEnded, ""
		return kfEvent(now, map[string]any{"event_type": "session_status_change", "open_kfid": openKfID,
			"external_userid": externalUserID, "change_type": 3, "old_servicer_userid": old,
			"msg_code": randomString(24)}), nil
	})
}

// SetKFState puts the conversation in state (KFStateNew…KFStateEnded)
// without an event, as a change made elsewhere would.
func (s *Server) SetKFState(openKfID, externalUserID string, state int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.kf.accounts[openKfID]; a != nil {
		a.customer(externalUserID).state = state
	}
}

// KFState is the conversation's service state; -1 for a customer who never
// appeared on the account.
func (s *Server) KFState(openKfID, externalUserID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.kf.accounts[openKfID]; a != nil {
		if c := a.customers[externalUserID]; c != nil {
			return c.state
		}
	}
	return -1
}

// SetKFNickname sets what kf/customer/batchget answers for the customer.
func (s *Server) SetKFNickname(externalUserID, nickname string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kf.nicknames[externalUserID] = nickname
}

// KFAnnounce posts a kf_msg_or_event callback for openKfID with a fresh
// Token and no new message, as WeCom's retries and spurious pushes do.
func (s *Server) KFAnnounce(ctx context.Context, openKfID string) error {
	_, err := s.kfAppend(ctx, openKfID, func(*kfAccount, time.Time) (map[string]any, error) { return nil, nil })
	return err
}

func kfEvent(now time.Time, ev map[string]any) map[string]any {
	// [EW] saw 44-character event msgids next to 26-character message ids.
	return map[string]any{"msgid": randomString(33), "send_time": now.Unix(), "origin": 4, "msgtype": "event", "event": ev}
}

func (a *kfAccount) customer(id string) *kfCustomer {
	c := a.customers[id]
	if c == nil {
		c = &kfCustomer{state: KFStateEnded}
		a.customers[id] = c
	}
	return c
}

// kfAppend stores the message add returns (none when nil), issues a Token
// and posts the callback outside the lock. It returns the message's msgid.
func (s *Server) kfAppend(ctx context.Context, openKfID string, add func(*kfAccount, time.Time) (map[string]any, error)) (string, error) {
	s.mu.Lock()
	a := s.kf.accounts[openKfID]
	if a == nil || a.app < 0 {
		s.mu.Unlock()
		return "", fmt.Errorf("wecomsim: kf account %q is not configured with a known app", openKfID)
	}
	now := s.now()
	msg, err := add(a, now)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	msgID := ""
	if msg != nil {
		msgID = msg["msgid"].(string)
		a.log = append(a.log, kfMessage{at: now, body: msg})
	}
	token := "ENC" + randomString(33)
	a.tokens[token] = now
	a.lastToken = token
	cb := s.kf.callbacks[a.AgentID]
	corp := s.apps[a.app].CorpID
	s.changedLocked()
	s.mu.Unlock()

	if cb == nil {
		return msgID, nil
	}
	status, body, err := cb.Post(ctx, KFCallbackXML(corp, now.Unix(), token, openKfID))
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("wecomsim: kf callback answered HTTP %d: %.200s", status, body)
	}
	return msgID, err
}

// KFLastToken is the Token of the newest callback for openKfID.
func (s *Server) KFLastToken(openKfID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.kf.accounts[openKfID]; a != nil {
		return a.lastToken
	}
	return ""
}

// KFEmptyPagesNext makes the next n sync_msg calls answer an empty page with
// has_more=1 (and a cursor at the same place), which WeCom documents
// as possible: a puller that stops on an empty msg_list loses messages.
func (s *Server) KFEmptyPagesNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kf.emptyNext += max(n, 0)
}

// KFNoCursorNext makes the next n sync_msg pages come without next_cursor,
// as peers observed: a caller that stores "" re-reads 3 days of history.
func (s *Server) KFNoCursorNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kf.noCursor += max(n, 0)
}

// KFSyncCalls counts the sync_msg calls for openKfID that got past the
// access token check, refused ones included (injected faults and outages
// are not counted: they are answered before the body is read).
func (s *Server) KFSyncCalls(openKfID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kf.syncCalls[openKfID]
}

// KFCalls counts the calls of the kf API api (APIKF…) that got past the
// access token check, refused ones included.
func (s *Server) KFCalls(api string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kf.apiCalls[api]
}

// KFBatchGetCalls counts the kf/customer/batchget calls answered (not the
// refused ones).
func (s *Server) KFBatchGetCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kf.batchGets
}

// KFReceived returns what the customer received on the account, in order;
// externalUserID "" returns every customer's.
func (s *Server) KFReceived(openKfID, externalUserID string) []KFSent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []KFSent
	for _, m := range s.kf.sent {
		if m.OpenKfID == openKfID && (externalUserID == "" || m.ToUser == externalUserID) {
			out = append(out, m)
		}
	}
	return out
}

// KFWait blocks until cond holds or ctx is done. cond is evaluated whenever
// the simulator's state changes (for kf: a message stored, a page pulled, a
// message sent), so tests wait for the service without sleeping. cond may
// call the Server's accessors. The simulator has one change signal, shared
// with AIBotWait.
func (s *Server) KFWait(ctx context.Context, cond func() bool) error { return s.AIBotWait(ctx, cond) }

// kfAPIs are the kf APIs the simulator answers.
var kfAPIs = []string{APIKFSyncMsg, APIKFSendMsg, APIKFSendMsgOnEvent, APIKFBatchGet, APIKFServiceState}

func isKFAPI(api string) bool { return slices.Contains(kfAPIs, api) }

// kfAPI maps a request path to its kf API name, "" for other paths.
func kfAPI(path string) string {
	for _, api := range kfAPIs {
		if strings.HasSuffix(path, "/cgi-bin/"+api) {
			return api
		}
	}
	return ""
}

// KFSends counts the messages the customer received on the account since
// their last message: the part of the budget of 5 used up.
func (s *Server) KFSends(openKfID, externalUserID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.kf.accounts[openKfID]; a != nil {
		if c := a.customers[externalUserID]; c != nil {
			return c.sentSince
		}
	}
	return 0
}
