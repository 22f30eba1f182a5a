// Package kf is the wire protocol of WeChat customer service (微信客服, "kf"):
// the kf_msg_or_event callback's fields (read by wxcrypto, since the callback
// is an app callback), the kf/sync_msg pull with its cursor and message
// bodies, kf/send_msg and kf/send_msg_on_event, kf/customer/batchget, the
// error codes and what each one means for the caller, the outbound msgid
// rule and the 5-part reply budget.
//
// Client makes one HTTP request per call and nothing more: it takes the
// access token from the caller (the service's token manager owns it), never
// retries, refreshes or sleeps, and never puts the token into an error.
//
// The package must not store anything, run the pipeline or call the model:
// the cursor, the msgid dedupe, the one-puller-per-account lease, the outbox
// and the choice of what to answer belong to the caller. It holds no
// package-level mutable state and imports no other package of this module
// (its tests use wxcrypto for the callback vector and wecomsim to play WeCom).
package kf
