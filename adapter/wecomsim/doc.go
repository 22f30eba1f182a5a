// Package wecomsim is an in-process stand-in for WeCom (企业微信) that speaks
// its real wire protocol in both directions: Server answers gettoken and
// message/send the way qyapi.weixin.qq.com does, and Callback posts encrypted,
// signed callbacks to our service the way WeCom's servers do. For the AI bot
// (智能机器人), AIBotCallback plays API mode (callbacks, then polling of a
// streamed answer), and Server serves response_url and the long connection.
// For 微信客服 (kf.go), Server keeps accounts and customers, announces their
// news to the app's callback and serves sync_msg, send_msg and friends.
// Users' images (media.go): media/get serves an app's and 微信客服's files
// by media_id, and an AI bot's images sit behind encrypted URLs that expire
// after 5 minutes (IssueAIBotMedia).
//
// It exists so the service's end-to-end tests, and the demo and simulate
// commands, run against WeCom's actual behaviour, unpleasant parts included:
// tokens that expire or are revoked early, the old docs' "same token, fresh
// expires_in" answer, messages silently dropped by the duplicate check,
// partial delivery failures, outages and injected error codes.
//
// It must not talk to the real WeCom and must not import this module's own
// packages: it plays an outside party, so it knows only the wire format, and
// its crypto comes from silenceper's implementation so that it cross-checks
// ours instead of sharing its bugs (except the opening of AI bot replies,
// which silenceper refuses for their empty receive id; see decryptAIBot). It must not import package testing either,
// because commands start it too.
package wecomsim
