package web

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

func TestLoginThrottle(t *testing.T) {
	e := newPanelEnv(t)
	try := func(ip, pw string) *httptest.ResponseRecorder {
		return e.do(request{method: "POST", path: "/admin/login", ip: ip, form: url.Values{"username": {adminUser}, "password": {pw}}})
	}
	for i := range throttleFree {
		if rec := try("198.51.100.9", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i+1, rec.Code)
		}
	}
	// Now even the right password waits, and says how long.
	rec := try("198.51.100.9", adminPW)
	wantStatus(t, rec, http.StatusTooManyRequests)
	wantBody(t, rec, "Too many failed attempts")
	if rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q, want 1", rec.Header().Get("Retry-After"))
	}
	// The JSON API shares the throttle.
	req := httptest.NewRequest("GET", "/api/bots", nil)
	req.RemoteAddr = "198.51.100.9:1"
	req.SetBasicAuth(adminUser, adminPW)
	api := httptest.NewRecorder()
	e.h.ServeHTTP(api, req)
	wantStatus(t, api, http.StatusTooManyRequests)
	// Another address is not slowed down.
	wantStatus(t, try("198.51.100.10", adminPW), http.StatusSeeOther)

	// Each further failure doubles the wait.
	e.now = e.now.Add(time.Second)
	wantStatus(t, try("198.51.100.9", "guess"), http.StatusUnauthorized)
	rec = try("198.51.100.9", adminPW)
	wantStatus(t, rec, http.StatusTooManyRequests)
	if rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("Retry-After %q, want 2", rec.Header().Get("Retry-After"))
	}
	e.now = e.now.Add(2 * time.Second)
	wantStatus(t, try("198.51.100.9", adminPW), http.StatusSeeOther)
	// A success forgets the failures.
	wantStatus(t, try("198.51.100.9", "guess"), http.StatusUnauthorized)
	wantStatus(t, try("198.51.100.9", adminPW), http.StatusSeeOther)
}

func TestThrottleForgetsAndCaps(t *testing.T) {
	now := t0
	th := newThrottle(func() time.Time { return now })
	for range 40 {
		th.fail("a")
	}
	if w := th.wait("a"); w != throttleMaxDelay {
		t.Fatalf("wait after 40 failures %v, want %v", w, throttleMaxDelay)
	}
	now = now.Add(throttleForget)
	if w := th.wait("a"); w != 0 {
		t.Fatalf("wait after %v quiet: %v", throttleForget, w)
	}
	th.fail("a")
	if w := th.wait("a"); w != 0 {
		t.Fatalf("the count restarted, yet wait %v", w)
	}
}

func TestThrottleTableStaysBounded(t *testing.T) {
	now := t0
	th := newThrottle(func() time.Time { return now })
	for i := range throttleSweepAt {
		th.fail(itoa(int64(i)))
	}
	// All recent: the sweep keeps them and the next one waits for the table
	// to double.
	th.fail("fresh")
	if n := len(th.byIP); n != throttleSweepAt+1 {
		t.Fatalf("%d IPs after a sweep of recent ones, want %d", n, throttleSweepAt+1)
	}
	now = now.Add(throttleForget)
	for i := range throttleSweepAt {
		th.fail("later" + itoa(int64(i)))
	}
	if n := len(th.byIP); n > 2*throttleSweepAt+2 {
		t.Fatalf("%d IPs: the forgotten ones were never swept", n)
	}
	if _, ok := th.byIP["0"]; ok {
		t.Fatal("an IP forgotten long ago is still in the table")
	}
}
