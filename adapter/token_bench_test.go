package adapter

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wecombot/wecombot/adapter/wecomsim"
)

// BenchmarkTokenGet compares reading a warm token through our manager with
// silenceper's WorkAccessToken on its memory cache, side by side. Run it with
// -cpu 2: goroutines=2 is one reader per core, goroutines=100 is the
// service under load (b.SetParallelism(50)).
//
//	go test -run='^$' -bench=TokenGet -cpu 2 ./adapter
func BenchmarkTokenGet(b *testing.B) {
	e := newTokEnv(b, wecomsim.Options{})
	// The service's clock: a real one.
	tm := newTokenManager(TokenManagerOptions{
		Bot:           BotConfig{Name: tokBot, CorpID: tokCorpID, AgentID: tokAgentID, Secret: tokSecret},
		RefreshBefore: tokRefresh, API: e.api, Store: e.openDB(b, "bench.db"),
		Clock: clockwork.NewRealClock(), Log: e.log.logger(), Metrics: e.metrics,
	})
	tok := mustGet(b, tm)

	// silenceper with the same token in its cache, so it never calls WeCom.
	const prefix = "wecombot"
	agent := strconv.FormatInt(tokAgentID, 10)
	mem := cache.NewMemory()
	if err := mem.Set(fmt.Sprintf("%s_access_token_%s_%s", prefix, tokCorpID, agent), tok, 2*time.Hour); err != nil {
		b.Fatal(err)
	}
	sp := credential.NewWorkAccessToken(tokCorpID, tokSecret, agent, prefix, mem)
	if got, err := sp.GetAccessTokenContext(context.Background()); err != nil || got != tok {
		b.Fatalf("silenceper does not read the pre-populated token: %v", err)
	}

	handles := []struct {
		name string
		get  func(context.Context) (string, error)
	}{
		{"wecombot", tm.Get},
		{"silenceper", sp.GetAccessTokenContext},
	}
	for _, h := range handles {
		for _, par := range []int{1, 50} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", h.name, par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(par)
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						if got, err := h.get(ctx); err != nil || got != tok {
							b.Errorf("get = %.8s…, %v", got, err)
							return
						}
					}
				})
			})
		}
	}
	if got := e.sim.TotalTokenFetches(); got != 1 {
		b.Errorf("gettoken calls = %d during the benchmark, want 1", got)
	}
}

// TestTokenGettokenPerLifetime counts gettoken calls per token lifetime for
// four instances on one Redis: ours make one, whatever the number of
// goroutines and instances. silenceper's count for the same cold start is
// logged beside it. It sets silenceper's package-global URI modifier: it
// must not run in parallel.
func TestTokenGettokenPerLifetime(t *testing.T) {
	const instances, goroutines = 4, 25
	c := newTokCluster(t, instances, wecomsim.Options{})
	e := c.e
	e.sim.SetLatency(20 * time.Millisecond) // a gettoken's round trip to WeCom

	coldBurst := func(get func(i int) error) {
		t.Helper()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range instances {
			for range goroutines {
				wg.Go(func() {
					<-start
					if err := get(i); err != nil {
						t.Errorf("instance %d: %v", i, err)
					}
				})
			}
		}
		close(start)
		wg.Wait()
	}

	// Ours: a cold start, one lifetime of proactive refresh, one revoke.
	c.run(t)
	coldBurst(func(i int) error { _, err := c.tms[i].Get(context.Background()); return err })
	cold := e.sim.TotalTokenFetches()
	e.sim.SetLatency(0)
	e.settle(t, c.tms...)
	e.idle(t, tokLife, 20*time.Second, nil, c.tms...)
	lifetime := e.sim.TotalTokenFetches() - cold
	e.sim.RevokeTokens()
	c.sendAll(t, goroutines, "after a revoke")
	revoked := e.sim.TotalTokenFetches() - cold - lifetime
	t.Logf("wecombot, %d instances × %d goroutines on %s: %d gettoken at the cold start, %d in a lifetime, %d after a revoke",
		instances, goroutines, c.redis.Kind, cold, lifetime, revoked)
	if cold != 1 || lifetime != 1 || revoked != 1 {
		t.Errorf("gettoken calls: %d cold, %d per lifetime, %d per revoke; want 1 each\n%s", cold, lifetime, revoked, c.dump())
	}

	// silenceper: four WorkAccessTokens on one Redis, the same cold start.
	util.SetURIModifier(func(uri string) string {
		return strings.Replace(uri, "https://qyapi.weixin.qq.com", e.srv.URL, 1)
	})
	t.Cleanup(func() { util.SetURIModifier(nil) })
	e.sim.SetLatency(20 * time.Millisecond)
	agent := strconv.FormatInt(tokAgentID, 10)
	var sp []credential.AccessTokenContextHandle
	for range instances {
		rc := cache.NewRedis(context.Background(), &cache.RedisOpts{Host: c.redis.Addr})
		sp = append(sp, credential.NewWorkAccessToken(tokCorpID, tokSecret, agent, "silenceper", rc))
	}
	before := e.sim.TotalTokenFetches()
	coldBurst(func(i int) error { _, err := sp[i].GetAccessTokenContext(context.Background()); return err })
	t.Logf("silenceper, %d instances × %d goroutines on %s: %d gettoken at the cold start",
		instances, goroutines, c.redis.Kind, e.sim.TotalTokenFetches()-before)
}
