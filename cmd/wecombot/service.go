package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wecombot/wecombot/adapter"
	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
	"github.com/wecombot/wecombot/web"
)

// Main is the running service: every component, wired. Tests start it on
// port 0 and read Addr.
type Main struct {
	Config *Config
	Log    *slog.Logger
	// Clock drives token expiry, backoff and pacing; tests replace it.
	Clock clockwork.Clock
	// LLM replaces the OpenAI client when set (tests, demo).
	LLM adapter.Completer
	// Simulator, when set (demo), adds the panel's "chat as a WeCom user"
	// page. When it is nil and wecom.simulator says that wecom.api_base is
	// the simulator (`wecombot simulate`), Open wires one reading that
	// simulator; otherwise the panel has no chat page.
	Simulator web.Simulator

	// Addr is the address the server listens on, once Open returned.
	Addr string
	// PprofAddr is the profiler's address (server.pprof_addr), once Open
	// returned; empty when it is off.
	PprofAddr string

	db     *storage.DB
	redis  *storage.Redis
	app    *adapter.App
	server *http.Server
	served chan error
	pprof  *http.Server
	// stopJanitor ends the janitor (storage.retention); janitorDone is
	// closed when it has returned.
	stopJanitor context.CancelFunc
	janitorDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewMain prepares a service for cfg, logging to logOut.
func NewMain(cfg *Config, logOut io.Writer) *Main {
	return &Main{Config: cfg, Log: newLogger(cfg.Log, logOut), Clock: clockwork.NewRealClock()}
}

func newLogger(c LogConfig, out io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// Open starts the service: storage, Redis, tokens, pipeline, outbox, HTTP.
func (m *Main) Open(ctx context.Context) error {
	cfg := m.Config
	db, err := storage.Open(ctx, cfg.Storage.Config)
	if err != nil {
		return err
	}
	m.db = db
	var shared adapter.SharedTokens
	if cfg.Redis.Addr != "" {
		m.redis = storage.OpenRedis(cfg.Redis.Addr)
		shared = m.redis
		if err := m.redis.Ping(ctx); err != nil {
			m.Log.Warn("redis unavailable at start; each instance uses its own token until it answers", "err", err)
		}
	}
	// A shared database (Postgres) dedupes and hands out work for every
	// instance. With SQLite each instance has its own: Redis, when there,
	// dedupes across them (README, "Scale out").
	shareDB := cfg.Storage.Driver == "postgres"
	outboxPoll := time.Minute
	if shareDB {
		outboxPoll = time.Second
	}
	var claims adapter.MessageClaims
	var leases adapter.ConnectionLeases
	if m.redis != nil && !shareDB {
		claims, leases = m.redis, m.redis
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := adapter.NewMetrics(reg)
	// m.LLM, when set, answers for every bot, whatever its model.
	completer := m.LLM
	if completer == nil {
		completer = llm.New(cfg.LLM.Config)
	}
	model, host := shownModel(cfg.LLM.Config, completer)
	app, err := adapter.New(adapter.Options{
		WeCom: cfg.WeCom.WeComConfig,
		Bots:  cfg.Bots,
		Pipeline: adapter.PipelineConfig{
			LLM:     cfg.LLM.LLMConfig,
			Replies: cfg.Replies,
			Model:   model,
			Host:    host,
			KeySet:  cfg.LLM.APIKey != "" && model != llm.EchoModel,
			Bots:    botModels(cfg, m.LLM),
			// A message may wait out the provider's rate limit as long as
			// one call may take.
			RateLimitWait: time.Duration(cfg.LLM.Timeout),
			Lease:         time.Duration(cfg.Pipeline.Lease),
			Exclusive:     !shareDB,
		},
		Outbox:  adapter.OutboxConfig{GiveUpAfter: time.Duration(cfg.Pipeline.GiveUpAfter), Poll: outboxPoll},
		Claims:  claims,
		Leases:  leases,
		Store:   db,
		Shared:  shared,
		LLM:     completer,
		Clock:   m.Clock,
		Log:     m.Log,
		Metrics: metrics,
	})
	if err != nil {
		m.closeStores()
		return err
	}
	m.app = app

	sim := m.Simulator
	if sim == nil && cfg.WeCom.Simulator {
		sim = newSimChat(newRemoteDeliveries(cfg.WeCom.APIBase), cfg.Bots)
		m.Log.Info("wecom.simulator: the panel has a \"chat as a WeCom user\" page on the simulator at wecom.api_base", "api_base", cfg.WeCom.APIBase)
	}
	gin.SetMode(gin.ReleaseMode)
	engine := gin.New()
	engine.Use(gin.Recovery())
	app.Routes(engine)
	web.New(web.Options{
		Admin:     cfg.Admin,
		Bots:      app,
		KF:        app,
		Outbox:    app,
		Store:     db,
		Config:    func() web.ConfigReport { return panelConfig(cfg, model == llm.EchoModel) },
		Metrics:   promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Log:       m.Log,
		Now:       m.Clock.Now,
		Simulator: sim,
	}).Routes(engine)

	ln, err := net.Listen("tcp", cfg.Server.Addr)
	if err != nil {
		m.closeStores()
		return fmt.Errorf("listen on %s: %w", cfg.Server.Addr, err)
	}
	m.Addr = ln.Addr().String()
	if c, ok := sim.(*simChat); ok {
		c.setService(serviceURL(m.Addr))
	}
	var pprofLn net.Listener
	if a := cfg.Server.PprofAddr; a != "" {
		if pprofLn, err = net.Listen("tcp", a); err != nil {
			ln.Close()
			m.closeStores()
			return fmt.Errorf("listen on %s (server.pprof_addr): %w", a, err)
		}
		m.PprofAddr = pprofLn.Addr().String()
	}
	if err := app.Start(ctx); err != nil {
		ln.Close()
		if pprofLn != nil {
			pprofLn.Close()
		}
		m.closeStores()
		return err
	}
	if pprofLn != nil {
		m.pprof = &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 5 * time.Second}
		go m.pprof.Serve(pprofLn) // returns when close closes it
		m.Log.Info("Go's profiler listening (server.pprof_addr)", "addr", m.PprofAddr)
	}
	m.server = &http.Server{
		Handler:           engine,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.server.Serve(ln) }()
	jctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.stopJanitor, m.janitorDone = stop, make(chan struct{})
	go func() {
		defer close(m.janitorDone)
		janitor(jctx, db, time.Duration(cfg.Storage.Retention), m.Clock, m.Log)
	}()
	m.Log.Info("wecombot listening", "addr", m.Addr, "bots", len(cfg.Bots))
	return nil
}

// Close stops accepting requests, lets work in progress finish within
// server.shutdown_timeout, and closes the database. What is left is stored
// and resumed at the next start.
func (m *Main) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Main) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(m.Config.Server.ShutdownTimeout))
	defer cancel()
	var errs []error
	if m.pprof != nil {
		m.pprof.Close() // a profile being taken is cut short
	}
	if m.server != nil {
		if err := m.server.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if m.app != nil {
		if err := m.app.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("work left for the next start: %w", err))
		}
	}
	if m.stopJanitor != nil {
		m.stopJanitor() // a prune in progress ends with its batch
		<-m.janitorDone
	}
	errs = append(errs, m.closeStores())
	m.Log.Info("wecombot stopped")
	return errors.Join(errs...)
}

func (m *Main) closeStores() error {
	var errs []error
	if m.redis != nil {
		errs = append(errs, m.redis.Close())
	}
	if m.db != nil {
		errs = append(errs, m.db.Close())
	}
	return errors.Join(errs...)
}

// App returns the WeCom side (for tests).
func (m *Main) App() *adapter.App { return m.app }
