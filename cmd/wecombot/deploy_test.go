package main

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	checkGC(t, "docker-compose.yml: wecombot", w.Environment)
	checkGC(t, "docker-compose.yml: wecombot-2", c.Services["wecombot-2"].Environment)
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

// composeService is what the tests read of a compose service.
type composeService struct {
	Build       any               `yaml:"build"`
	Image       string            `yaml:"image"`
	EnvFile     any               `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Profiles    []string          `yaml:"profiles"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Restart   string `yaml:"restart"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil { // yaml.v3 applies the <<: merge keys
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// composeVar is compose's ${VAR}, ${VAR:-default} and ${VAR:?error}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate does what compose does to a value, from env.
func interpolate(t *testing.T, s string, env map[string]string) string {
	t.Helper()
	return composeVar.ReplaceAllStringFunc(s, func(ref string) string {
		m := composeVar.FindStringSubmatch(ref)
		if v, ok := env[m[1]]; ok && v != "" {
			return v
		}
		if strings.HasSuffix(m[2], "-") {
			return m[3]
		}
		t.Errorf("compose would stop: %s is not set (%s)", m[1], ref)
		return ""
	})
}

// The scale setup (docker-compose.scale.yml): two instances on one Postgres
// and one Redis behind nginx. It is a separate compose project, so that
// `docker compose up` of docker-compose.yml still starts one SQLite instance.
func TestComposeScale(t *testing.T) {
	single := readCompose(t, "../../docker-compose.yml")
	for name := range single.Services {
		if name != "wecombot" && name != "redis" && !slices.Contains(single.Services[name].Profiles, "second") {
			t.Errorf("docker-compose.yml: service %s would start with `docker compose up`", name)
		}
	}
	c := readCompose(t, "../../docker-compose.scale.yml")
	if c.Name == "" || c.Name == "wecombot" {
		t.Errorf("scale file project name %q: must differ from docker-compose.yml's (the folder's), or the two setups mix", c.Name)
	}
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"nginx", "postgres", "redis", "wecombot-a", "wecombot-b"}; !slices.Equal(names, want) {
		t.Fatalf("scale services %v, want %v", names, want)
	}

	pg := c.Services["postgres"]
	if pg.Image != "postgres:16-alpine" || pg.Restart == "" ||
		!strings.Contains(strings.Join(pg.Volumes, " "), ":/var/lib/postgresql/data") ||
		!strings.Contains(strings.Join(pg.Healthcheck.Test, " "), "pg_isready") ||
		!strings.Contains(pg.Environment["POSTGRES_PASSWORD"], "${POSTGRES_PASSWORD") {
		t.Errorf("postgres service: %+v", pg)
	}
	if r := c.Services["redis"]; !strings.HasPrefix(r.Image, "redis:") || len(r.Healthcheck.Test) == 0 || len(r.Volumes) == 0 {
		t.Errorf("redis service: %+v", r)
	}
	for _, v := range []string{"postgres-data", "redis-data"} {
		if _, ok := c.Volumes[v]; !ok {
			t.Errorf("volume %s missing", v)
		}
	}

	// What compose reads from .env for interpolation: the example's names.
	envExample, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	dotenv := map[string]string{}
	for _, line := range strings.Split(string(envExample), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			dotenv[k] = "x"
		}
	}
	// What the instances get from env_file: .env, valid enough to validate.
	dotenv["POSTGRES_PASSWORD"] = "pw_1"
	dotenv["WECOM_AES_KEY"] = cfgAESKey
	shipped, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"wecombot-a", "wecombot-b"} {
		w := c.Services[name]
		if w.Image != "wecombot:latest" || w.Build == nil || w.EnvFile == nil || w.Restart == "" {
			t.Errorf("%s: %+v", name, w)
		}
		if len(w.Ports) != 0 {
			t.Errorf("%s publishes %v: only nginx should", name, w.Ports)
		}
		checkGC(t, "docker-compose.scale.yml: "+name, w.Environment)
		if strings.Join(w.Healthcheck.Test, " ") != "CMD wecombot health" {
			t.Errorf("%s healthcheck %v", name, w.Healthcheck.Test)
		}
		if !slices.Contains(w.Volumes, "./config.yaml:/etc/wecombot/config.yaml:ro") {
			t.Errorf("%s: config not mounted: %v", name, w.Volumes)
		}
		for _, dep := range []string{"postgres", "redis"} {
			if cond := w.DependsOn[dep].Condition; cond != "service_healthy" {
				t.Errorf("%s depends on %s with condition %q, want service_healthy", name, dep, cond)
			}
		}

		// The configuration this instance loads: the mounted config.yaml
		// expanded from its environment (.env, then environment:).
		env := maps.Clone(dotenv)
		for k, v := range w.Environment {
			env[k] = interpolate(t, v, dotenv)
		}
		cfg, err := ParseConfig(shipped, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if cfg == nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err != nil {
			t.Errorf("%s: its config does not validate: %v", name, err)
		}
		if cfg.Storage.Driver != "postgres" || cfg.Storage.DSN != "postgres://wecombot:pw_1@postgres:5432/wecombot?sslmode=disable" {
			t.Errorf("%s storage: %+v", name, cfg.Storage)
		}
		if cfg.Redis.Addr != "redis:6379" {
			t.Errorf("%s redis.addr %q", name, cfg.Redis.Addr)
		}
		if cfg.Server.Addr != ":8080" {
			t.Errorf("%s listens on %q; nginx.conf sends to :8080", name, cfg.Server.Addr)
		}
	}
	// Without those variables (docker-compose.yml, a plain binary) the same
	// file keeps SQLite.
	cfg, err := ParseConfig(shipped, func(k string) (string, bool) { v, ok := dotenv[k]; return v, ok })
	if err != nil || cfg.Storage.Driver != "sqlite" || cfg.Storage.DSN != "data/wecombot.db" {
		t.Errorf("single instance storage %+v: %v", cfg.Storage, err)
	}

	ng := c.Services["nginx"]
	if ng.Image != "nginx:1.27-alpine" || ng.Restart == "" || !slices.Contains(ng.Volumes, "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro") {
		t.Errorf("nginx service: %+v", ng)
	}
	if len(ng.Ports) != 1 || !strings.HasSuffix(ng.Ports[0], ":8080") {
		t.Errorf("nginx ports %v: want the one port WeCom calls, to its listen 8080", ng.Ports)
	}
	for _, dep := range []string{"wecombot-a", "wecombot-b"} {
		if _, ok := ng.DependsOn[dep]; !ok {
			t.Errorf("nginx does not depend on %s", dep)
		}
	}
	// Every variable compose needs is in .env.example.
	raw, _ := os.ReadFile("../../docker-compose.scale.yml")
	for _, m := range composeVar.FindAllStringSubmatch(string(raw), -1) {
		if !strings.HasSuffix(m[2], "-") && !strings.Contains(string(envExample), m[1]+"=") {
			t.Errorf(".env.example lacks %s", m[1])
		}
	}
}

// gcEnv is the garbage collector's setting of the shipped image: the
// Dockerfile's ENV, repeated in the compose files where an operator sees
// it. wecombot-load gives its child processes the same.
var gcEnv = map[string]string{"GOGC": "400", "GOMEMLIMIT": "128MiB"}

// checkGC checks that a compose service's environment sets gcEnv.
func checkGC(t *testing.T, service string, env map[string]string) {
	t.Helper()
	for k, v := range gcEnv {
		if env[k] != v {
			t.Errorf("%s: environment %s=%q, want %q", service, k, env[k], v)
		}
	}
}

var nginxUpstream = regexp.MustCompile(`(?s)upstream\s+(\S+)\s*\{(.*?)\}`)

// deploy/nginx.conf balances over both instances; the admin panel is pinned.
func TestDeployNginxConf(t *testing.T) {
	data, err := os.ReadFile("../../deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	ups := map[string]string{}
	for _, m := range nginxUpstream.FindAllStringSubmatch(conf, -1) {
		ups[m[1]] = m[2]
	}
	for _, name := range []string{"wecombot", "wecombot_admin"} {
		for _, srv := range []string{"server wecombot-a:8080", "server wecombot-b:8080"} {
			if !strings.Contains(ups[name], srv) {
				t.Errorf("upstream %s lacks %q", name, srv)
			}
		}
	}
	if strings.Contains(ups["wecombot"], "ip_hash") || !strings.Contains(ups["wecombot_admin"], "ip_hash") {
		t.Errorf("want round-robin for callbacks and ip_hash for the admin panel: %v", ups)
	}
	for _, want := range []string{
		"listen 8080;",
		"location /wecom/ {\n            proxy_pass http://wecombot;",
		"location /admin {\n            proxy_pass http://wecombot_admin;",
		"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}

	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("SKIPPED: nginx is not on PATH, so `nginx -t` did not check deploy/nginx.conf (apt-get install nginx to check it)")
	}
	// The compose service names resolve only inside compose: nginx -t
	// resolves upstream hosts, so they are pointed at this machine.
	dir := t.TempDir()
	local := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(local, []byte(strings.NewReplacer("wecombot-a:", "127.0.0.1:", "wecombot-b:", "127.0.0.1:").Replace(conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", local, "-g", "pid "+filepath.Join(dir, "nginx.pid")+";").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(data)
	build := regexp.MustCompile(`(?m)^RUN .*go build .*$`).FindString(d)
	if !strings.Contains(build, "-tags nomsgpack") {
		t.Errorf("the Dockerfile's go build line %q lacks -tags nomsgpack", build)
	}
	for _, want := range []string{"CGO_ENABLED=1", "AS build", "USER wecombot", "VOLUME", `HEALTHCHECK`, `"wecombot", "health"`,
		"\nENV GOGC=" + gcEnv["GOGC"] + " GOMEMLIMIT=" + gcEnv["GOMEMLIMIT"] + "\n"} {
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

// The product's binary links no test fake and no measuring tool: the fake
// LLM (llm/llmtest) and the load tool (cmd/wecombot-load) stay out of it.
// (Go's profiler is in it, behind server.pprof_addr.)
func TestShippedBuildLeavesOutTheTestFakes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", "nomsgpack", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		ours, isOurs := strings.CutPrefix(pkg, "github.com/wecombot/wecombot/")
		if isOurs && (strings.HasSuffix(ours, "test") || strings.HasPrefix(ours, "cmd/wecombot-load")) {
			t.Errorf("the wecombot binary links %s", pkg)
		}
	}
}

// The shipped build (Dockerfile, README: -tags nomsgpack) leaves gin's
// MessagePack codec out, which is what keeps idle RSS down (BENCHMARKS.md).
func TestShippedBuildLeavesOutMsgpack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := func(tags ...string) string {
		args := append([]string{"list", "-deps"}, tags...)
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Env = append(os.Environ(), "GOFLAGS=") // only the tags given here
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	const codec = "github.com/ugorji/go/codec\n"
	if !strings.Contains(deps(), codec) {
		t.Fatal("the untagged build does not link ugorji's codec: the nomsgpack tag no longer matters; drop it")
	}
	if strings.Contains(deps("-tags", "nomsgpack"), codec) {
		t.Fatal("the nomsgpack build still links ugorji's codec")
	}
}
