package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The compose file is a contract with operators: its services, volumes and
// healthchecks. No Docker engine runs here, so it is checked as YAML.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Image       string            `yaml:"image"`
			EnvFile     any               `yaml:"env_file"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
			Restart   string         `yaml:"restart"`
			DependsOn map[string]any `yaml:"depends_on"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	w, r := c.Services["wecombot"], c.Services["redis"]
	if w.Build == nil || w.EnvFile == nil || w.Restart == "" || w.DependsOn["redis"] == nil {
		t.Errorf("wecombot service: %+v", w)
	}
	if strings.Join(w.Healthcheck.Test, " ") != "CMD wecombot health" {
		t.Errorf("wecombot healthcheck %v", w.Healthcheck.Test)
	}
	if !strings.Contains(strings.Join(w.Volumes, " "), "./config.yaml:/etc/wecombot/config.yaml:ro") {
		t.Errorf("config not mounted: %v", w.Volumes)
	}
	if w.Environment["WECOMBOT_REDIS_ADDR"] != "redis:6379" {
		t.Errorf("redis address not passed: %v", w.Environment)
	}
	if !strings.HasPrefix(r.Image, "redis:") || len(r.Healthcheck.Test) == 0 || len(r.Volumes) == 0 || r.Restart == "" {
		t.Errorf("redis service: %+v", r)
	}
	// The second instance shares Redis (tokens) but not the database.
	w2 := c.Services["wecombot-2"]
	if w2.Environment["WECOMBOT_REDIS_ADDR"] != "redis:6379" || !strings.Contains(strings.Join(w2.Volumes, " "), "wecombot-2-data:") {
		t.Errorf("second instance: %+v", w2)
	}
	for _, v := range []string{"wecombot-data", "wecombot-2-data", "redis-data"} {
		if _, ok := c.Volumes[v]; !ok {
			t.Errorf("volume %s missing", v)
		}
	}
	// Every ${VAR} the shipped config needs is documented in .env.example.
	cfg, _ := os.ReadFile("../../config.yaml")
	env, _ := os.ReadFile("../../.env.example")
	for _, m := range regexp.MustCompile(`\$\{([A-Z_]+)\}`).FindAllStringSubmatch(string(cfg), -1) {
		if m[1] != "VAR" && !strings.Contains(string(env), m[1]+"=") { // VAR: the header's example
			t.Errorf(".env.example lacks %s", m[1])
		}
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(data)
	for _, want := range []string{"CGO_ENABLED=1", "AS build", "USER wecombot", "VOLUME", `HEALTHCHECK`, `"wecombot", "health"`} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func TestHealthCommand(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		w.Write([]byte(r.URL.Path[1:]))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"health", "-url", srv.URL}, &out, &errb); code != 0 || !strings.Contains(out.String(), "healthz") {
		t.Fatalf("healthy: %d %q %q", code, out.String(), errb.String())
	}
	if code := run(context.Background(), []string{"health", "-ready", "-url", srv.URL}, &out, &errb); code != 0 || !strings.Contains(out.String(), "readyz") {
		t.Fatalf("ready: %d %q", code, out.String())
	}
	status = http.StatusServiceUnavailable
	if code := run(context.Background(), []string{"health", "-url", srv.URL}, &out, &errb); code != 1 {
		t.Fatalf("unhealthy: exit %d", code)
	}
	if code := run(context.Background(), []string{"health", "-url", "http://127.0.0.1:1"}, &out, &errb); code != 1 {
		t.Fatalf("down: exit %d", code)
	}
}
