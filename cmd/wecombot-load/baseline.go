package main

import (
	"context"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"
	"github.com/silenceper/wechat/v2/util"
)

// baselineCommand is the hidden subcommand that serves the baseline:
// `wecombot-load baseline -config PATH`, which a run starts as a process of
// its own, as the service is.
const baselineCommand = "baseline"

// runBaseline serves baselineHandler for the first bot of the configuration
// file a run wrote, on its server.addr, until ctx ends. It answers 200 to
// callbacks without storing them, so it refuses to run unless a run started
// it, and on anything but a loopback address: pointed at a real
// configuration by mistake, it would drop users' messages. Its collector
// settings come from the environment the run gives it (childEnv).
func runBaseline(ctx context.Context, args []string, stderr io.Writer) int {
	if os.Getenv(loadChildEnv) != "1" {
		fmt.Fprintln(stderr, "wecombot-load baseline: started by a wecombot-load run only (it acknowledges callbacks without storing them)")
		return 2
	}
	fs := flag.NewFlagSet("wecombot-load baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the configuration file the run wrote")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := readServiceConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "wecombot-load baseline: %v\n", err)
		return 1
	}
	if len(cfg.Bots) == 0 {
		fmt.Fprintln(stderr, "wecombot-load baseline: no bot configured")
		return 1
	}
	host, _, err := net.SplitHostPort(cfg.Server.Addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(stderr, "wecombot-load baseline: server.addr %q is not a loopback address\n", cfg.Server.Addr)
		return 1
	}
	b := cfg.Bots[0]
	srv, _, err := serve(baselineHandler(b.Token, b.EncodingAESKey, b.CorpID), cfg.Server.Addr)
	if err != nil {
		fmt.Fprintf(stderr, "wecombot-load baseline: %v\n", err)
		return 1
	}
	<-ctx.Done()
	srv.Close()
	return 0
}

// baselineHandler is the floor the service is measured against: only what
// any callback handler must do (signature check, decrypt, XML parse) with
// silenceper's code, answering 200. Nothing is stored, deduped or answered.
func baselineHandler(token, aesKey, corpID string) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET("/readyz", func(c *gin.Context) { c.Status(http.StatusOK) }) // for launcher.start
	e.POST("/wecom/:bot/callback", func(c *gin.Context) {
		body, err := io.ReadAll(io.LimitReader(c.Request.Body, 1<<20))
		if err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		var env struct {
			Encrypt string `xml:"Encrypt"`
		}
		if err := xml.Unmarshal(body, &env); err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		if util.Signature(token, c.Query("timestamp"), c.Query("nonce"), env.Encrypt) != c.Query("msg_signature") {
			c.Status(http.StatusForbidden)
			return
		}
		_, plain, err := util.DecryptMsg(corpID, env.Encrypt, aesKey)
		if err != nil {
			c.Status(http.StatusForbidden)
			return
		}
		var msg struct {
			ToUserName, FromUserName, MsgType, Content string
			CreateTime, MsgId, AgentID                 int64
		}
		if err := xml.Unmarshal(plain, &msg); err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		c.Status(http.StatusOK)
	})
	return e
}
