package web

import (
	"net/http"
	"strings"
	"testing"
)

func TestStorageFailureIsA500(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	e.db.Close()
	for _, p := range []string{"/admin/", "/admin/conversations", "/admin/messages", "/admin/send"} {
		rec := e.get(p, s)
		wantStatus(t, rec, http.StatusInternalServerError)
		wantBody(t, rec, "internal error")
		if strings.Contains(rec.Body.String(), "sql") {
			t.Errorf("%s shows the database error: %s", p, rec.Body)
		}
	}
}
