package main

import (
	"net/http"
	"net/http/pprof"
)

// pprofHandler is Go's profiler (server.pprof_addr), on a mux of its own:
// net/http/pprof registers on http.DefaultServeMux when imported, which the
// service never serves.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
