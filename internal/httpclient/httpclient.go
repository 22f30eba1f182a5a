// Package httpclient holds the HTTP transport of the service's outgoing
// clients (the model's API, WeCom's API), so that llm and adapter share it
// without importing each other. It must not hold any client's logic:
// timeouts, retries and error handling stay with each client.
package httpclient

import "net/http"

// maxIdlePerHost is how many idle connections to one host the service's
// HTTP clients keep for reuse: more than the requests it makes to a host at
// once (pipeline workers, outbox senders, both 16 or fewer by default).
const maxIdlePerHost = 64

// NewTransport is net/http's default transport keeping maxIdlePerHost idle
// connections per host instead of its default 2: the transport of the
// service's clients (the model's API, WeCom's). With 2, every request beyond
// the second running at once to the same host dialled a connection, TLS
// included, and closed it after the response: under load a new connection
// per answer.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxIdlePerHost
	t.MaxIdleConns = max(t.MaxIdleConns, 4*maxIdlePerHost)
	return t
}
