package kf

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrMalformed is wrapped by every error about an answer that is not the JSON
// WeCom documents (not JSON at all, or a field of the wrong type).
var ErrMalformed = errors.New("kf: malformed answer")

// Error codes the caller acts on (KF.md §10). The errmsg strings WeCom adds
// change; match on these codes only.
const (
	CodeSystemBusy        = -1
	CodeInvalidToken      = 40014
	CodeMissingToken      = 41001
	CodeTokenExpired      = 42001
	CodeEmptyContent      = 44004
	CodeInvalidExternalID = 40096
	CodeAPIForbidden      = 48002
	CodeIPNotTrusted      = 60020
	CodeInvalidOpenKfID   = 95000
	CodeOverSendLimit     = 95001 // a 6th message for one customer message
	CodeOutsideWindow     = 95002 // 48 h after the customer's last message
	CodeUnknownOpenKfID   = 95004
	CodeInvalidMsgToken   = 95007 // the callback Token is older than 10 minutes
	CodeEditionMismatch1  = 95011
	CodeEditionMismatch2  = 95012
	CodeSessionEnded      = 95013 // conversation already ended (state 4)
	CodeBadStateChange    = 95016
	CodeAPISwitchOff      = 95017
	CodeSessionNotOurs    = 95018 // state not 0/1: a person has the conversation, or > 48 h
	// CodeDuplicateMsgID is the answer to a send_msg whose msgid the account
	// has already used. WeCom documents only that such a send "返回错误";
	// 95033 is what LangBot treats as "duplicate msgid, already sent" and is
	// not in the 2024 error table (KF.md §13), so it is unconfirmed. The
	// simulator answers it; a caller that sees it for a msgid it derived
	// with OutboundMsgID may count the part as delivered.
	CodeDuplicateMsgID = 95033
)

// Error is an error answer (errcode != 0) of a kf API.
type Error struct {
	API  string // "kf/sync_msg", "kf/send_msg", …
	Code int
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("kf: %s: errcode %d: %s", e.API, e.Code, e.Msg)
}

// ErrCode is the errcode, for callers that classify errors of several WeCom
// APIs through one small interface.
func (e *Error) ErrCode() int { return e.Code }

// HTTPError is a non-200 answer (a proxy, an outage).
type HTTPError struct {
	API    string
	Status int
}

func (e *HTTPError) Error() string { return fmt.Sprintf("kf: %s: HTTP status %d", e.API, e.Status) }

// code returns err's errcode and whether err is an *Error.
func code(err error) (int, bool) {
	var e *Error
	if !errors.As(err, &e) {
		return 0, false
	}
	return e.Code, true
}

func isCode(err error, codes ...int) bool {
	c, ok := code(err)
	return ok && slices.Contains(codes, c)
}

// TokenRejected reports whether WeCom refused the access token itself
// (40014, 42001, 41001): refresh it once and replay the same request, same
// msgid included.
func TokenRejected(err error) bool {
	return isCode(err, CodeInvalidToken, CodeTokenExpired, CodeMissingToken)
}

// ConfigError reports whether the app or the account is set up wrongly: IP
// not trusted, no permission, the API switch off, an edition/secret
// mismatch, an unknown open_kfid. Retrying cannot help until an
// administrator acts; the caller stops and shows Hint.
func ConfigError(err error) bool {
	return isCode(err, CodeIPNotTrusted, CodeAPIForbidden, CodeAPISwitchOff,
		CodeEditionMismatch1, CodeEditionMismatch2, CodeInvalidOpenKfID, CodeUnknownOpenKfID)
}

// MsgTokenExpired reports 95007: the callback Token passed to sync_msg is no
// longer valid. Retry with the newest Token seen for the account, or with
// none.
func MsgTokenExpired(err error) bool { return isCode(err, CodeInvalidMsgToken) }

// Permanent reports whether a send can never succeed as it is, so it must
// not be retried: over the 5-message budget (95001), outside the 48 h window
// (95002), the conversation is not the API's (95018) or has ended (95013),
// an invalid customer (40096), empty content (44004). The first four clear
// only when the customer writes again or the conversation comes back.
func Permanent(err error) bool {
	return isCode(err, CodeOverSendLimit, CodeOutsideWindow, CodeSessionNotOurs, CodeSessionEnded,
		CodeInvalidExternalID, CodeEmptyContent)
}

// HandedOver reports 95018: a person (or the queue) has the conversation;
// the bot stops answering this customer until it comes back.
func HandedOver(err error) bool { return isCode(err, CodeSessionNotOurs) }

// OverBudget reports 95001: stop sending until the customer writes again.
func OverBudget(err error) bool { return isCode(err, CodeOverSendLimit) }

// OutsideWindow reports 95002: the 48 h after the customer's last message are over.
func OutsideWindow(err error) bool { return isCode(err, CodeOutsideWindow) }

// DuplicateMsgID reports that the msgid was already used on the account: a
// part re-sent after a crash was delivered the first time (see
// CodeDuplicateMsgID for how sure that code is).
func DuplicateMsgID(err error) bool { return isCode(err, CodeDuplicateMsgID) }

// Hint tells an administrator what a kf error means, or "" when there is
// nothing specific to say.
func Hint(err error) string {
	c, ok := code(err)
	if !ok {
		return ""
	}
	switch c {
	case CodeInvalidToken, CodeTokenExpired, CodeMissingToken:
		return "WeCom refused the access token: the service fetches a new one."
	case CodeIPNotTrusted:
		return "WeCom refuses calls from this server's IP: add it to the app's trusted IPs."
	case CodeAPIForbidden, CodeAPISwitchOff:
		return "The app may not call the customer-service API: add it to 微信客服 > 可调用接口的应用, and move the account to 通过API管理微信客服账号."
	case CodeEditionMismatch1, CodeEditionMismatch2:
		return "The secret does not fit the customer-service edition: use the self-built app's secret."
	case CodeInvalidOpenKfID, CodeUnknownOpenKfID:
		return "Unknown customer-service account (open_kfid): check kf.accounts and that the account is managed by API."
	case CodeInvalidMsgToken:
		return "The callback Token expired (10 minutes): the service pulls with the newest Token or none."
	case CodeOverSendLimit:
		return "5 messages were sent for the customer's last message: nothing more until the customer writes again."
	case CodeOutsideWindow:
		return "More than 48 hours since the customer's last message: the customer must write first."
	case CodeSessionNotOurs:
		return "A person or the queue has this conversation (or it is older than 48 hours): the bot does not answer."
	case CodeSessionEnded:
		return "The conversation has ended."
	case CodeInvalidExternalID:
		return "WeCom does not know this customer (external_userid)."
	case CodeEmptyContent:
		return "An empty text was sent: WeCom refuses it."
	case CodeDuplicateMsgID:
		return "This message was already sent (same msgid)."
	}
	return ""
}

// HintOf is Hint for an error kept as text (a failed pull's stored
// last_error): the hint of the first "errcode N" in it, "" if none.
func HintOf(text string) string {
	_, rest, ok := strings.Cut(text, "errcode ")
	if !ok {
		return ""
	}
	n, _, _ := strings.Cut(rest, ":")
	c, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil {
		return ""
	}
	return Hint(&Error{Code: c})
}
