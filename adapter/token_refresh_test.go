package adapter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecombot/wecombot/adapter/wecomsim"
)

func TestTokenIdlePastExpiry(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		lifetime time.Duration
		idle     time.Duration
		step     time.Duration
		refreshs int
		// refreshed checks when the token prev was replaced.
		refreshed func(t *testing.T, prev, next TokenStatus, step time.Duration)
	}{{
		name: "7200s", lifetime: tokLife, idle: 3*tokLife + 10*time.Minute, step: 20 * time.Second, refreshs: 3,
		refreshed: func(t *testing.T, prev, next TokenStatus, step time.Duration) {
			// At expires_at - refresh_before, less up to 30 s of jitter.
			earliest := prev.ExpiresAt.Add(-tokRefresh - 30*time.Second)
			latest := prev.ExpiresAt.Add(-tokRefresh + step)
			if next.FetchedAt.Before(earliest) || next.FetchedAt.After(latest) {
				t.Errorf("refreshed %s before expiry, want %s..%s", prev.ExpiresAt.Sub(next.FetchedAt),
					tokRefresh-step, tokRefresh+30*time.Second)
			}
		},
	}, {
		name: "lifetime shorter than refresh_before", lifetime: 2 * time.Minute, idle: 6*time.Minute + 30*time.Second,
		step: 5 * time.Second, refreshs: 6,
		refreshed: func(t *testing.T, prev, next TokenStatus, step time.Duration) {
			// At half the lifetime.
			if d := next.FetchedAt.Sub(prev.FetchedAt); d < time.Minute || d >= time.Minute+step {
				t.Errorf("refreshed %s after the fetch, want half the lifetime (1m)", d)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, tm := runningTokEnv(t, wecomsim.Options{TokenLifetime: tc.lifetime})
			// The token's times without a clock read (see tokClock).
			held := func() TokenStatus {
				s := tm.cur.Load()
				return TokenStatus{ExpiresAt: s.expiresAt, FetchedAt: s.fetchedAt}
			}
			refreshs := 0
			prev := held()
			e.idle(t, tc.idle, tc.step, func() {
				st := held()
				if st.FetchedAt.Equal(prev.FetchedAt) {
					return
				}
				refreshs++
				tc.refreshed(t, prev, st, tc.step)
				prev = st
			}, tm)

			if refreshs != tc.refreshs {
				t.Errorf("%d proactive refreshes, want %d", refreshs, tc.refreshs)
			}
			if got, want := e.sim.TotalTokenFetches(), 1+tc.refreshs; got != want {
				t.Errorf("gettoken calls = %d, want %d (one per lifetime)", got, want)
			}
			if err := e.send(context.Background(), tm, "alice", "after the idle hours"); err != nil {
				t.Fatalf("send after idling: %v", err)
			}
			if r := e.sim.Rejected(); len(r) != 0 {
				t.Errorf("WeCom rejected calls: %v", r)
			}
			if got := e.sim.TotalTokenFetches(); got != 1+tc.refreshs {
				t.Errorf("the send cost a gettoken call (%d calls)", got)
			}
		})
	}
}

func TestTokenSameTokenOnRefetch(t *testing.T) {
	t.Parallel()
	e, tm := runningTokEnv(t, wecomsim.Options{SameTokenWhileValid: true})
	first := tm.Status()
	tokA := mustGet(t, tm)

	// Up to just before the expiry: one proactive refetch, answered with
	// the same token and a fresh expires_in.
	e.idle(t, tokLife-20*time.Second, 20*time.Second, nil, tm)
	if got := e.sim.TokenFetches(tokAgentID); got != 2 {
		t.Fatalf("gettoken calls = %d before the expiry, want 2 (first + one refresh, then none until expiry)", got)
	}
	if st := tm.Status(); !st.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatalf("expires_at moved from %s to %s: a repeat answer extended the known expiry",
			first.ExpiresAt, st.ExpiresAt)
	}
	if got := mustGet(t, tm); got != tokA {
		t.Fatal("the token changed although WeCom handed back the same one")
	}
	if err := e.send(context.Background(), tm, "alice", "just before the expiry"); err != nil {
		t.Fatalf("send before the expiry: %v", err)
	}

	// Across the real expiry: the next try is at that expiry, and gets a
	// new token.
	e.idle(t, 40*time.Second, 20*time.Second, nil, tm)
	if got := e.sim.TokenFetches(tokAgentID); got != 3 {
		t.Fatalf("gettoken calls = %d after the expiry, want 3", got)
	}
	st := tm.Status()
	if !st.FetchedAt.Equal(first.ExpiresAt) {
		t.Errorf("new token fetched at %s, want at the old one's expiry %s", st.FetchedAt, first.ExpiresAt)
	}
	if mustGet(t, tm) == tokA {
		t.Fatal("still the expired token")
	}
	if err := e.send(context.Background(), tm, "alice", "after the expiry"); err != nil {
		t.Fatalf("send after the expiry: %v", err)
	}
	if r := e.sim.Rejected(); len(r) != 0 {
		t.Errorf("WeCom rejected calls: %v", r)
	}
}

func TestTokenGettokenOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("lasting past the expiry", func(t *testing.T) {
		t.Parallel()
		e, tm := runningTokEnv(t, wecomsim.Options{})
		first := tm.Status()
		tok := mustGet(t, tm)
		e.sim.FailNext(wecomsim.APIGetToken, codeSystemBusy, "system busy", 1<<20)

		// Idle to the refresh point: the refresh fails.
		for e.settled(tm) {
			e.advance(20 * time.Second)
		}
		// Once the loop waits on its next timer, it has made the refresh.
		if err := e.fake.BlockUntilContext(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		if tm.Status().LastError == "" {
			t.Fatal("the refresh at the refresh point did not fail")
		}

		// Up to the token's real end (less the skew), sends go on with it.
		usable := first.ExpiresAt.Add(-30 * time.Second)
		sends := 0
		for e.fake.Now().Add(time.Minute).Before(usable) {
			e.advance(time.Minute)
			if err := e.send(ctx, tm, "alice", fmt.Sprintf("during the outage %d", sends)); err != nil {
				t.Fatalf("send during the outage at %s before expiry: %v", first.ExpiresAt.Sub(e.fake.Now()), err)
			}
			sends++
		}
		if sends < 4 {
			t.Fatalf("only %d sends during the outage", sends)
		}
		st := tm.Status()
		if !strings.Contains(st.LastError, "errcode -1") || st.State != TokenValid && st.State != TokenRefreshing {
			t.Errorf("status = %+v, want the last error and a valid token", st)
		}
		if !st.ExpiresAt.Equal(first.ExpiresAt) || mustGet(t, tm) != tok {
			t.Error("the failed refresh discarded or changed the valid token")
		}
		for _, s := range e.sent() {
			if s.token != tok {
				t.Fatal("a send used another token than the valid one")
			}
		}
		if got := e.sim.TotalTokenFetches(); got > 1+12 {
			t.Errorf("%d gettoken calls in a 5-minute outage: the retries do not back off", got)
		}

		// Past the real expiry the dead token is never used.
		e.advance(time.Minute)
		if err := e.send(ctx, tm, "alice", "after the expiry"); !errors.Is(err, ErrNoToken) {
			t.Errorf("send after the expiry = %v, want ErrNoToken", err)
		}
		if r := e.sim.Rejected(); r[codeTokenExpired] != 0 || r[codeInvalidToken] != 0 {
			t.Errorf("a dead token reached WeCom: rejected = %v", r)
		}
		if len(e.sim.Delivered()) != sends {
			t.Errorf("delivered %d, want %d", len(e.sim.Delivered()), sends)
		}
	})

	t.Run("ending before the expiry", func(t *testing.T) {
		t.Parallel()
		e, tm := runningTokEnv(t, wecomsim.Options{})
		first := tm.Status()
		const failures = 5
		e.sim.FailNext(wecomsim.APIGetToken, codeRateLimited, "api freq out of limit", failures)

		// Step by 10 s: the loop retries with backoff until WeCom answers
		// again, and the token never lapses meanwhile.
		for e.fake.Now().Before(first.ExpiresAt) && tm.Status().FetchedAt.Equal(first.FetchedAt) {
			e.advance(10 * time.Second)
			// A due timer left the clock's waiters: the loop is back
			// on its next timer once its attempt is over.
			if err := e.fake.BlockUntilContext(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			if err := e.send(ctx, tm, "alice", "while retrying "+e.fake.Now().String()); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		e.settle(t, tm)
		st := tm.Status()
		if !st.FetchedAt.Before(first.ExpiresAt.Add(-30*time.Second)) || st.LastError != "" || st.State != TokenValid {
			t.Errorf("status after the outage = %+v, want a new token fetched before the old one lapsed", st)
		}
		if got := e.sim.TotalTokenFetches(); got != 1+failures+1 {
			t.Errorf("gettoken calls = %d, want %d", got, 1+failures+1)
		}
		if r := e.sim.Rejected(); len(r) != 1 || r[codeRateLimited] != failures {
			t.Errorf("rejected = %v, want only the injected gettoken failures", r)
		}
	})
}

func TestTokenConfigErrorsDoNotLoop(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		secret string
		inject func(*wecomsim.Server)
		code   string
		hint   string
	}{{
		name: "40001 bad secret", secret: "Wq4nX8cV2bM6zL1kJ5hG9fD3sA7pO0iUyT8rE1w",
		code: "errcode 40001", hint: "secret is wrong",
	}, {
		name: "60020 IP not trusted",
		inject: func(s *wecomsim.Server) {
			s.FailNext(wecomsim.APIGetToken, codeIPNotTrusted, "not allow to access from your ip, hint: [1712345678_11_abcdef], from ip: 1.2.3.4, more info at https://open.work.weixin.qq.com/devtool/query?e=60020", 1<<20)
		},
		code: "errcode 60020", hint: "1.2.3.4",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTokEnv(t, wecomsim.Options{})
			if tc.inject != nil {
				tc.inject(e.sim)
			}
			tm := e.manager(t, tokManagerOptions{Secret: tc.secret})

			gets := func() {
				t.Helper()
				var wg sync.WaitGroup
				for range 100 {
					wg.Go(func() {
						if _, err := tm.Get(context.Background()); !errors.Is(err, ErrNoToken) {
							t.Errorf("Get = %v, want ErrNoToken", err)
						}
					})
				}
				wg.Wait()
			}
			gets()
			if got := e.sim.TotalTokenFetches(); got != 1 {
				t.Fatalf("100 Gets made %d gettoken calls, want 1", got)
			}
			st := tm.Status()
			if st.State != TokenError || !strings.Contains(st.LastError, tc.code) || !strings.Contains(st.Hint, tc.hint) {
				t.Fatalf("status = %+v, want state error, %q and a hint with %q", st, tc.code, tc.hint)
			}

			// The loop waits out the long backoff (1 min, then doubling).
			// Whenever the loop waits on its timer (the clock's one
			// waiter), it has done what fell due: a timer that fired
			// leaves the clock's waiters until the loop, its call made,
			// sets the next.
			loopWaits := func() {
				t.Helper()
				if err := e.fake.BlockUntilContext(t.Context(), 1); err != nil {
					t.Fatal(err)
				}
			}
			runTok(t, tm)
			calls := 1
			for _, backoff := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
				loopWaits()
				e.advance(backoff - time.Second)
				gets()
				loopWaits()
				if got := e.sim.TotalTokenFetches(); got != calls {
					t.Fatalf("gettoken called %d times within the %s backoff, want %d", got, backoff, calls)
				}
				e.advance(2 * time.Second)
				calls++
				loopWaits()
				if got := e.sim.TotalTokenFetches(); got != calls {
					t.Fatalf("gettoken called %d times after the %s backoff, want %d", got, backoff, calls)
				}
			}
			gets()
			loopWaits()
			if got := e.sim.TotalTokenFetches(); got != calls {
				t.Fatalf("gettoken calls = %d, want %d", got, calls)
			}
		})
	}
}
