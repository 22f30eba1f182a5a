package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestBaselineCommandRefuses: the baseline acknowledges callbacks without
// storing them; it runs only when a run starts it, on loopback.
func TestBaselineCommandRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, c *serviceConfig) string {
		t.Helper()
		path := filepath.Join(dir, name)
		data, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	public := newServiceConfig("db", "http://127.0.0.1:1", "http://127.0.0.1:2/v1", newLoadBot(), loadOptions{})
	public.Server.Addr = "0.0.0.0:0"
	noBot := newServiceConfig("db", "http://127.0.0.1:1", "http://127.0.0.1:2/v1", newLoadBot(), loadOptions{})
	noBot.Server.Addr, noBot.Bots = "127.0.0.1:0", nil
	missing := filepath.Join(dir, "none.yaml")
	for _, c := range []struct {
		name, env, config string
		code              int
		says              string
	}{
		{"not started by a run", "", write("public.yaml", public), 2, "started by a wecombot-load run only"},
		{"no configuration", "1", missing, 1, missing},
		{"no bot", "1", write("nobot.yaml", noBot), 1, "no bot configured"},
		{"a public address", "1", write("public.yaml", public), 1, "not a loopback address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(loadChildEnv, c.env)
			var stderr bytes.Buffer
			if code := run(context.Background(), []string{baselineCommand, "-config", c.config}, io.Discard, &stderr); code != c.code {
				t.Errorf("exit %d, want %d; stderr %s", code, c.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.says) {
				t.Errorf("stderr does not say %q: %s", c.says, stderr.String())
			}
		})
	}
}
