package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// loadChildEnv marks the processes a run starts: the baseline runs only
// with it.
const loadChildEnv = "WECOMBOT_LOAD_CHILD"

// childShutdown is the service's server.shutdown_timeout in a run; a child
// that has not ended this long (and a margin) after SIGINT is killed.
const childShutdown = 2 * time.Second

// childGC is the garbage collector's setting of the shipped image
// (Dockerfile, docker-compose files). The service and the baseline run with
// it, so that the figures are those of a deployment and stay comparable
// from run to run; a value that the caller's environment sets is inherited
// instead.
var childGC = []struct{ name, value string }{{"GOGC", "400"}, {"GOMEMLIMIT", "128MiB"}}

// childEnv is the environment of the processes a run starts: environ, the
// mark the baseline requires, and childGC where environ does not set it.
// gc says each collector setting and where it came from, for the report.
func childEnv(environ []string) (env, gc []string) {
	env = append(slices.Clip(environ), loadChildEnv+"=1")
	for _, s := range childGC {
		if v := lookupEnv(environ, s.name); v != "" {
			gc = append(gc, s.name+"="+v+" (from the environment)")
			continue
		}
		env = append(env, s.name+"="+s.value)
		gc = append(gc, s.name+"="+s.value)
	}
	return env, gc
}

// lookupEnv is the value of name in environ: the last one, as exec.Cmd
// takes it.
func lookupEnv(environ []string, name string) string {
	for _, kv := range slices.Backward(environ) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// findWecombot is the wecombot executable that the service runs from: path
// when given (a file, or a name looked up on PATH), else wecombot beside
// this executable, else wecombot on PATH.
func findWecombot(path string) (string, error) {
	if path != "" {
		bin, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("-wecombot %s: %w", path, err)
		}
		return bin, nil
	}
	if self, err := os.Executable(); err == nil {
		if bin, err := exec.LookPath(filepath.Join(filepath.Dir(self), "wecombot")); err == nil {
			return bin, nil
		}
	}
	if bin, err := exec.LookPath("wecombot"); err == nil {
		return bin, nil
	}
	return "", errors.New("no wecombot executable beside this one or on PATH: build one " +
		"(go build -tags nomsgpack -o /tmp/wecombot ./cmd/wecombot) and pass -wecombot /tmp/wecombot")
}

// serviceConfig is the part of wecombot's configuration file that a run
// sets; wecombot's defaults hold for every other key. The baseline reads
// the same file for its address and its bot.
type serviceConfig struct {
	Server struct {
		Addr            string `yaml:"addr"`
		ShutdownTimeout string `yaml:"shutdown_timeout"`
		PprofAddr       string `yaml:"pprof_addr,omitempty"`
	} `yaml:"server"`
	Storage struct {
		DSN string `yaml:"dsn"`
	} `yaml:"storage"`
	WeCom struct {
		APIBase string `yaml:"api_base"`
	} `yaml:"wecom"`
	LLM struct {
		BaseURL        string `yaml:"base_url"`
		APIKey         string `yaml:"api_key"`
		Timeout        string `yaml:"timeout"`
		MaxConcurrency int    `yaml:"max_concurrency,omitempty"`
	} `yaml:"llm"`
	Admin struct {
		Password string `yaml:"password"`
	} `yaml:"admin"`
	Replies struct {
		Unavailable string `yaml:"unavailable"`
	} `yaml:"replies"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	Bots []loadBot `yaml:"bots"`
}

// newServiceConfig is the service of a run: its database at dsn, WeCom at
// apiBase, the model at llmBase, and bot. Its address is set when it
// starts.
func newServiceConfig(dsn, apiBase, llmBase string, bot loadBot, o loadOptions) *serviceConfig {
	var c serviceConfig
	c.Server.ShutdownTimeout = childShutdown.String()
	c.Storage.DSN = dsn
	c.WeCom.APIBase = apiBase
	c.LLM.BaseURL, c.LLM.APIKey = llmBase, "sk-load"
	c.LLM.Timeout = (o.LLMLatency + 30*time.Second).String()
	c.LLM.MaxConcurrency = o.MaxConcurrency // 0: left out, the service's default
	c.Admin.Password = randomHex(8)
	c.Replies.Unavailable = loadUnavailable
	c.Log.Level = "error"
	c.Bots = []loadBot{bot}
	return &c
}

// readServiceConfig reads a file that newServiceConfig wrote.
func readServiceConfig(path string) (*serviceConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c serviceConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// loadService is a child process of a run (the service or the baseline):
// its address, its pid and how to stop it (idempotent).
type loadService struct {
	addr string
	pid  int
	stop func() error
}

// launcher starts the child processes of a run: their configuration goes
// to dir, their output to log, and they get env.
type launcher struct {
	dir string
	env []string
	log io.Writer
}

// start writes cfg to the launcher's dir and runs `bin command -config` on
// it (wecombot serve: the service; wecombot-load baseline: the baseline)
// on a free loopback port, until its /readyz answers 200.
func (l launcher) start(ctx context.Context, cfg *serviceConfig, bin, command string) (*loadService, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cfg.Server.Addr = addr // the child listens there next; nothing else here dials 0-ports
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(l.dir, "config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	name := filepath.Base(bin) + " " + command
	cmd := exec.Command(bin, command, "-config", path)
	cmd.Env = l.env
	cmd.Stdout, cmd.Stderr = l.log, l.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, command, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case stopErr = <-exited:
			case <-time.After(childShutdown + 10*time.Second):
				_ = cmd.Process.Kill()
				stopErr = fmt.Errorf("killed after the shutdown timeout: %v", <-exited)
			}
		})
		return stopErr
	}
	svc := &loadService{addr: addr, pid: cmd.Process.Pid, stop: stop}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return svc, nil
			}
		}
		select {
		case err := <-exited:
			exited <- err // for stop
			stop()
			return nil, fmt.Errorf("%s exited before it was ready: %v", name, err)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s on %s was not ready within 30s", name, addr)
		}
	}
}

// freeLoopbackAddr is a loopback address with a port free at the moment,
// for a process started next to listen on.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
