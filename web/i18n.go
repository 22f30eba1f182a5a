package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// The panel speaks Chinese (the default: WeCom administrators mostly read
// it) and English. The translations are i18n/{zh,en}.json, flat key → text.
const (
	langZH = "zh"
	langEN = "en"

	langCookie = "wecombot_lang"
)

func loadDicts() map[string]map[string]string {
	dicts := map[string]map[string]string{}
	for _, code := range []string{langZH, langEN} {
		b, err := assets.ReadFile("i18n/" + code + ".json")
		if err != nil {
			panic(err) // embedded: a missing file is a build mistake
		}
		d := map[string]string{}
		if err := json.Unmarshal(b, &d); err != nil {
			panic(fmt.Sprintf("web: i18n/%s.json: %v", code, err))
		}
		dicts[code] = d
	}
	return dicts
}

// translator is the admin's language; templates call .L.T "key".
type translator struct {
	code string
	dict map[string]string
}

// T returns the text of key, formatted with args; the key itself when it
// has no translation (a test keeps both dictionaries complete).
func (t translator) T(key string, args ...any) string {
	s, ok := t.dict[key]
	if !ok {
		return key
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// N is the text of key for the count n, formatted with n and then args.
// English has two forms: key+".one" for 1, key for any other count;
// Chinese has one, key. Every count a template shows goes through N (a
// test checks that each such key has its English ".one").
func (t translator) N(key string, n any, args ...any) string {
	if t.code == langEN && isOne(n) {
		if _, ok := t.dict[key+pluralOne]; ok {
			key += pluralOne
		}
	}
	return t.T(key, append([]any{n}, args...)...)
}

// pluralOne ends the key of the English singular (translator.N).
const pluralOne = ".one"

func isOne(n any) bool {
	switch v := n.(type) {
	case int:
		return v == 1
	case int64:
		return v == 1
	case int32:
		return v == 1
	case uint:
		return v == 1
	case uint64:
		return v == 1
	}
	return false
}

// Code is the language's code, for <html lang>.
func (t translator) Code() string {
	if t.code == langZH {
		return "zh-CN"
	}
	return t.code
}

// lang is the language of the request: the switch's cookie, else the
// browser's Accept-Language, else Chinese.
func (r *renderer) lang(c *gin.Context) translator {
	code := ""
	if ck, err := c.Cookie(langCookie); err == nil {
		if _, ok := r.dicts[ck]; ok {
			code = ck
		}
	}
	if code == "" {
		code = fromAcceptLanguage(c.GetHeader("Accept-Language"))
	}
	return translator{code: code, dict: r.dicts[code]}
}

// fromAcceptLanguage picks zh or en from an Accept-Language header, by
// quality; the first of equal ones wins.
func fromAcceptLanguage(h string) string {
	best, bestQ := langZH, 0.0
	for _, part := range strings.Split(h, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		primary, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if (primary == langZH || primary == langEN) && q > bestQ {
			best, bestQ = primary, q
		}
	}
	return best
}

// switchLanguage handles the language switch: ?lang=xx on any panel page
// stores the choice in a cookie and reloads the page without it.
func (r *renderer) switchLanguage(c *gin.Context) {
	code := c.Query("lang")
	if code == "" || c.Request.Method != http.MethodGet {
		c.Next()
		return
	}
	if _, ok := r.dicts[code]; ok {
		http.SetCookie(c.Writer, &http.Cookie{
			Name: langCookie, Value: code, Path: "/admin/", MaxAge: 365 * 24 * 3600,
			HttpOnly: true, Secure: isTLS(c.Request), SameSite: http.SameSiteLaxMode,
		})
	}
	u := *c.Request.URL
	q := u.Query()
	q.Del("lang")
	u.RawQuery = q.Encode()
	redirect(c, u.RequestURI(), "/admin/", "")
}
