package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// assets are the panel's templates, styles, script and translations, built
// into the binary: the panel needs no build step and works offline.
//
//go:embed templates static i18n
var assets embed.FS

// renderer renders the panel's pages. It is built once, at start.
type renderer struct {
	pages   map[string]*template.Template
	dicts   map[string]map[string]string
	loc     *time.Location
	now     func() time.Time // Options.Now: the zone's name and offset are today's
	log     *slog.Logger
	version string // of the static assets, for their URLs' cache busting
	files   http.Handler
	chat    bool // the menu shows the chat page (demo mode)
}

func newRenderer(loc *time.Location, now func() time.Time, log *slog.Logger) *renderer {
	r := &renderer{pages: map[string]*template.Template{}, dicts: loadDicts(), loc: loc, now: now, log: log}
	funcs := template.FuncMap{
		"ts":    r.timestamp,
		"hm":    func(t time.Time) string { return t.In(loc).Format("15:04") },
		"dur":   clockDuration,
		"pathq": url.PathEscape,
		"ms":    millis,
		"group": groupOf,
	}
	// Each page is parsed with the layout it fills in.
	for _, name := range []string{"login", "dashboard", "conversations", "conversation", "messages", "send", "config", "chat", "error"} {
		r.pages[name] = template.Must(template.New(name).Funcs(funcs).
			ParseFS(assets, "templates/layout.html", "templates/"+name+".html"))
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the folder
	}
	h := sha256.New()
	for _, f := range []string{"static/app.css", "static/app.js", "static/chat.js"} {
		b, err := assets.ReadFile(f)
		if err != nil {
			panic(err)
		}
		h.Write(b)
	}
	r.version = hex.EncodeToString(h.Sum(nil))[:12]
	r.files = http.StripPrefix("/admin/static/", http.FileServerFS(static))
	return r
}

// timestamp shows t in the panel's time zone; "—" when unset.
func (r *renderer) timestamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.In(r.loc).Format("2006-01-02 15:04:05")
}

// clockDuration shows seconds as h:mm:ss (app.js counts down in the same form).
func clockDuration(secs int64) string {
	secs = max(secs, 0)
	return fmt.Sprintf("%d:%02d:%02d", secs/3600, secs/60%60, secs%60)
}

// millis shows a latency in milliseconds, with decimals when it is short.
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	digits := 0
	switch {
	case ms < 1:
		digits = 2
	case ms < 10:
		digits = 1
	}
	return strconv.FormatFloat(ms, 'f', digits, 64) + " ms"
}

// view is what every page template receives.
type view struct {
	L       translator
	Page    string // template name
	Nav     string // the menu entry to highlight
	Authed  bool
	Chat    bool // the menu has the chat page
	Flash   string
	LangURL map[string]string // this page in each language
	Asset   string            // asset version
	Zone    string
	Data    any
}

// page renders template name with data, in the admin's language.
func (r *renderer) page(c *gin.Context, status int, name string, data any) {
	r.execute(c, status, name, "layout", r.view(c, name, data))
}

// fragment renders the block of page name with data, without the layout:
// a part of a page that a script replaces in place.
func (r *renderer) fragment(c *gin.Context, name, block string, data any) {
	r.execute(c, http.StatusOK, name, block, r.view(c, name, data))
}

func (r *renderer) execute(c *gin.Context, status int, name, block string, v view) {
	var buf bytes.Buffer
	if err := r.pages[name].ExecuteTemplate(&buf, block, v); err != nil {
		r.log.Error("admin panel: render", "page", name, "block", block, "err", err)
		c.String(http.StatusInternalServerError, "internal error")
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

// view is what the templates of page name receive for data.
func (r *renderer) view(c *gin.Context, name string, data any) view {
	l := r.lang(c)
	v := view{
		L: l, Page: name, Nav: strings.TrimSuffix(name, "s"), Authed: c.GetBool(ctxAuthed), Chat: r.chat,
		LangURL: map[string]string{}, Asset: r.version, Zone: r.now().In(r.loc).Format("MST (-07:00)"), Data: data,
	}
	if f := c.Query("flash"); f != "" {
		v.Flash = l.dict["flash."+f] // only known messages are shown
	}
	for code := range r.dicts {
		u := *c.Request.URL
		q := u.Query()
		q.Set("lang", code)
		q.Del("flash")
		u.RawQuery = q.Encode()
		v.LangURL[code] = u.RequestURI()
	}
	return v
}

// static serves the embedded styles and script. Their URLs carry the asset
// version, so a versioned request may be cached for good.
func (r *renderer) static(c *gin.Context) {
	if strings.HasSuffix(c.Request.URL.Path, "/") {
		c.Status(http.StatusNotFound) // no folder listings
		return
	}
	if c.Query("v") == r.version {
		c.Header("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		c.Header("Cache-Control", "no-cache")
	}
	c.Header("X-Content-Type-Options", "nosniff")
	r.files.ServeHTTP(c.Writer, c.Request)
}

// securityHeaders keeps the panel's pages out of frames, other sites'
// referrers and caches, and allows only its own scripts and styles.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "+
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.Next()
}

// redirect answers 303 to target when it is a page of the panel (else to
// fallback), with a flash message key; a form is never re-posted.
func redirect(c *gin.Context, target, fallback, flash string) {
	u, err := url.Parse(target)
	if err != nil || target == "" || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(target, "/admin/") || strings.ContainsAny(target, "\\\r\n") {
		u, _ = url.Parse(fallback)
	}
	if flash != "" {
		q := u.Query()
		q.Set("flash", flash)
		u.RawQuery = q.Encode()
	}
	c.Redirect(http.StatusSeeOther, u.String())
	c.Abort()
}

// isTLS says whether the admin reached us over HTTPS, directly or through a
// proxy. A spoofed header can only make the cookie stricter.
func isTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}
