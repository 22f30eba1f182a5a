package web

import "testing"

func TestConfigPage(t *testing.T) {
	e := newPanelEnv(t)
	s := e.login()
	rec := e.get("/admin/config", s)
	wantStatus(t, rec, 200)
	wantBody(t, rec, "password: &#39;******&#39;", "The configuration has 1 problem:", "config: llm.model: is empty")
	e.report.Problems = nil
	wantBody(t, e.get("/admin/config", s), `id="check-ok"`, "Configuration OK.")
}
