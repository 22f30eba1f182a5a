// Command wecombot connects a WeCom self-built app to an LLM. It is the only
// package that knows every other one: it reads the configuration and hands
// each component its dependencies.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: wecombot [command] [-config PATH]

commands:
  serve   run the service (default)
  check   validate the configuration and print every problem found;
          -online then calls WeCom for each bot (gettoken for an app; with
          -subscribe, a subscribe for an AI bot on the long connection,
          which takes it from a running service) and the model (a
          one-token answer), printing ok or FAILED with what to do
  demo    run the service against a built-in WeCom simulator, with a
          throwaway database and (without OPENAI_API_KEY) an offline model;
          -addr sets the listen address (default 127.0.0.1:8080)
  health  exit 0 when the service answers /healthz (-ready: /readyz), for
          container healthchecks; -url overrides the address from the config
  simulate  play WeCom for a service under development: serve gettoken and
          message/send for the configured bots on -listen (point
          wecom.api_base there, and set wecom.simulator: true for the
          panel's "chat as a WeCom user" page) and send each stdin line
          "user: text" as an encrypted callback to -service, printing the
          answers

-config defaults to $WECOMBOT_CONFIG, then config.yaml.
`

// run is main without the process: testable.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("wecombot "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultPath := os.Getenv("WECOMBOT_CONFIG")
	if defaultPath == "" {
		defaultPath = "config.yaml"
	}
	path := fs.String("config", defaultPath, "configuration file")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (demo)")
	listen := fs.String("listen", "127.0.0.1:9000", "simulator listen address (simulate)")
	service := fs.String("service", "", "service base URL (simulate; default from server.addr)")
	botName := fs.String("bot", "", "bot to send callbacks to (simulate; default the first)")
	healthURL := fs.String("url", "", "service base URL (health; default from server.addr)")
	ready := fs.Bool("ready", false, "check /readyz instead of /healthz (health)")
	online := fs.Bool("online", false, "also call WeCom and the model with the configured credentials (check)")
	subscribe := fs.Bool("subscribe", false, "with -online, also subscribe each AI bot's long connection; takes it from a running service (check)")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// Without any file named, a missing config.yaml is most likely a first
	// try: say where to start rather than "no such file".
	named := os.Getenv("WECOMBOT_CONFIG") != ""
	fs.Visit(func(f *flag.Flag) { named = named || f.Name == "config" })
	switch cmd {
	case "serve", "check", "simulate":
		if _, err := os.Stat(*path); !named && errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "wecombot: no %s here: try `wecombot demo`, or copy config.yaml from the repository and run `wecombot check`\n", *path)
			return 1
		}
	}
	switch cmd {
	case "serve":
		return serve(ctx, *path, stderr)
	case "check":
		cfg, code := check(*path, stdout, stderr)
		if code != 0 || !*online {
			return code
		}
		return checkOnline(ctx, *path, cfg, *subscribe, stdout, stderr)
	case "demo":
		demoPath := ""
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "config" {
				demoPath = *path
			}
		})
		return runDemo(ctx, demoOptions{Addr: *addr, ConfigPath: demoPath, Getenv: os.Getenv, Log: stderr}, stdout)
	case "simulate":
		cfg, err := loadConfig(*path, stderr)
		if err != nil {
			return 1
		}
		base := *service
		if base == "" {
			base = serviceURL(cfg.Server.Addr)
		}
		err = runSimulate(ctx, simulateOptions{Config: cfg, Listen: *listen, Service: base, Bot: *botName, In: os.Stdin, Out: stdout})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	case "health":
		return health(ctx, *path, *healthURL, *ready, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "wecombot: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

// check prints every problem of the configuration, or that it is fine, and
// then its warnings, which do not change the exit status. It returns the
// configuration for `check -online`.
func check(path string, stdout, stderr io.Writer) (*Config, int) {
	cfg, err := loadConfig(path, stderr)
	if err == nil {
		fmt.Fprintf(stdout, "%s: configuration OK (%d bot(s))\n", path, len(cfg.Bots))
	}
	if cfg != nil {
		for _, w := range cfg.warnings() {
			fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
		}
	}
	if err != nil {
		return cfg, 1
	}
	return cfg, 0
}

// health asks the running service whether it is up (or ready). It needs no
// curl in the container image.
func health(ctx context.Context, path, base string, ready bool, stdout, stderr io.Writer) int {
	if base == "" {
		addr := ":8080"
		// Problems elsewhere in the file do not matter here.
		if cfg, _ := LoadConfig(path); cfg != nil && cfg.Server.Addr != "" {
			addr = cfg.Server.Addr
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			fmt.Fprintf(stderr, "health: server.addr %q: %v\n", addr, err)
			return 1
		}
		base = serviceURL(addr)
	}
	endpoint := "/healthz"
	if ready {
		endpoint = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+endpoint, nil)
	if err != nil {
		fmt.Fprintf(stderr, "health: %v\n", err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "health: %s: %s %s\n", endpoint, resp.Status, body)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", endpoint, strings.TrimSpace(string(body)))
	return 0
}

// loadConfig loads path and lists every problem on stderr.
func loadConfig(path string, stderr io.Writer) (*Config, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: configuration has problems:\n", path)
		for _, e := range unjoin(err) {
			fmt.Fprintf(stderr, "  - %s\n", e)
		}
	}
	return cfg, err
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func serve(ctx context.Context, path string, stderr io.Writer) int {
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return 1
	}
	m := NewMain(cfg, stderr)
	for _, w := range cfg.warnings() {
		m.Log.Warn("config: " + w)
	}
	if err := m.Open(ctx); err != nil {
		fmt.Fprintf(stderr, "wecombot: %v\n", err)
		return 1
	}
	<-ctx.Done()
	if err := m.Close(); err != nil {
		fmt.Fprintf(stderr, "wecombot: shutdown: %v\n", err)
		return 1
	}
	return 0
}
