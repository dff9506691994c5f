package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/subsystems"
)

// dashboardFile is the dashboard under test.
const dashboardFile = "grafana/mlbpf.json"

type target struct {
	Datasource *datasource `json:"datasource"`
	Expr       string      `json:"expr"`
	RefID      string      `json:"refId"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Repeat     string                    `json:"repeat"`
	Datasource *datasource               `json:"datasource"`
	GridPos    *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []target                  `json:"targets"`
	Panels     []panel                   `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// query is one PromQL query of the dashboard, where it is, and the label
// its result must carry (a variable's label_values).
type query struct {
	where, expr, label string
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// loadDashboard reads the dashboard, checks its structure (a Prometheus
// datasource variable every panel and query uses, unique panel ids, a
// place for every panel) and returns its queries.
func loadDashboard(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: not a dashboard: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("%s: uid %q, title %q, schemaVersion %d, %d panels", dashboardFile, d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	const ds = "${datasource}"
	var queries []query
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			var q string
			if json.Unmarshal(v.Query, &q) != nil || q != "prometheus" || v.Name != "datasource" {
				t.Errorf("variable %s: want the datasource variable 'datasource' of type prometheus, have %s", v.Name, v.Query)
			}
		case "query":
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil || v.Datasource == nil || v.Datasource.UID != ds {
				t.Errorf("variable %s: want label_values(EXPR, LABEL) on %s, have %q on %+v", v.Name, ds, q.Query, v.Datasource)
				continue
			}
			queries = append(queries, query{where: "variable " + v.Name, expr: m[1], label: m[2]})
		}
	}
	if !vars["datasource"] || !vars["job"] || !vars["model"] {
		t.Errorf("variables %v: want datasource, job and model", vars)
	}
	ids := map[int]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("%s: id already used by %s", where, prev)
			}
			ids[p.ID] = where
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: no gridPos", where)
			}
			if p.Repeat != "" && !vars[p.Repeat] {
				t.Errorf("%s: repeats over unknown variable %q", where, p.Repeat)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 || p.Datasource == nil || p.Datasource.UID != ds {
				t.Errorf("%s: want queries on %s, have %d on %+v", where, ds, len(p.Targets), p.Datasource)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.Datasource == nil || tg.Datasource.UID != ds {
					t.Errorf("%s query %s: want an expression on %s, have %q on %+v", where, tg.RefID, ds, tg.Expr, tg.Datasource)
					continue
				}
				queries = append(queries, query{where: where + " query " + tg.RefID, expr: tg.Expr})
			}
		}
	}
	walk(d.Panels)
	return queries
}

// expand replaces the dashboard's variables the way Grafana would for one
// job and one model.
func expand(expr, job, model string) string {
	return strings.NewReplacer("$__rate_interval", "10s", "${job}", job, "$job", job, "${model}", model, "$model", model).Replace(expr)
}

// prometheus is a Prometheus server run for a test.
type prometheus struct {
	url string
	log *testutil.SyncBuffer
}

// startPrometheus runs Prometheus on a free loopback port, with its
// storage in a temporary directory, scraping target (host:port) as job
// every second; it is stopped when the test ends.
func startPrometheus(t *testing.T, job, target string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testutil.Missing(t, "prometheus is not installed: apt-get install prometheus (scripts/setup.sh test)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: [%q]
`, job, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &prometheus{url: "http://" + addr, log: &testutil.SyncBuffer{}}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, p.log)
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s after 30s:\n%s", addr, p.log)
		}
	}
}

// series runs an instant query and returns the label sets of its result.
func (p *prometheus) series(expr string) ([]map[string]string, error) {
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status, Error string
		Data          struct {
			ResultType string
			Result     []struct{ Metric map[string]string }
		}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("querying %q: %s: %w", expr, body, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("querying %q: %s: %s", expr, r.Status, r.Error)
	}
	var out []map[string]string
	for _, s := range r.Data.Result {
		out = append(out, s.Metric)
	}
	return out, nil
}

// answered says whether q returns data (with its label, for a variable).
func (p *prometheus) answered(q query, job, model string) (bool, error) {
	ss, err := p.series(expand(q.expr, job, model))
	if err != nil || len(ss) == 0 {
		return false, err
	}
	if q.label == "" {
		return true, nil
	}
	for _, s := range ss {
		if s[q.label] != "" {
			return true, nil
		}
	}
	return false, nil
}

// startDaemon runs a daemon with the synthetic model and metrics on a
// loopback port, and returns that address.
func startDaemon(t *testing.T) string {
	t.Helper()
	testutil.RequireBPF(t)
	dir := t.TempDir()
	cfg, err := config.Parse("dashboard.yaml", []byte(fmt.Sprintf(`
pin_root: %s
state_dir: %s
socket: %s
interval: 100ms
metrics:
  addr: 127.0.0.1:0
models:
  - name: synthetic/demo
    mode: learning
    max_mode: collaboration
    lease: 3s
    synthetic:
      pid: %d
`, testutil.PinRoot(t), filepath.Join(dir, "state"), filepath.Join(dir, "run", "agent.sock"), testutil.SyscallLoad(t))))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	d, err := daemon.New(daemon.Options{Config: cfg, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v\n%s", err, logs)
		}
	})
	select {
	case <-d.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("daemon ended: %v\n%s", err, logs)
	}
	return d.MetricsAddr()
}

// TestGrafanaDashboard checks that every query of the dashboard returns
// data from a real Prometheus scraping a real daemon, and that the README
// documents every metric the daemon exports.
func TestGrafanaDashboard(t *testing.T) {
	queries := loadDashboard(t)
	if t.Failed() {
		return
	}
	if _, err := exec.LookPath("prometheus"); err != nil {
		testutil.Missing(t, "prometheus is not installed: apt-get install prometheus (scripts/setup.sh test)")
	}
	const job, model = "mlbpf", "synthetic/demo"
	metrics := startDaemon(t)
	prom := startPrometheus(t, job, metrics)

	// The checker itself: a metric nobody exports returns nothing.
	if ok, err := prom.answered(query{expr: `mlbpf_no_such_metric{job=~"$job"}`}, job, model); ok || err != nil {
		t.Fatalf("a query on a metric nobody exports: answered %v, %v", ok, err)
	}

	// Every query must return data; the efficiency estimate appears once
	// the model has evidence, rates once two scrapes are in.
	pending := append([]query(nil), queries...)
	for deadline := time.Now().Add(90 * time.Second); len(pending) > 0 && time.Now().Before(deadline); time.Sleep(time.Second) {
		var still []query
		for _, q := range pending {
			ok, err := prom.answered(q, job, model)
			if err != nil {
				t.Fatalf("%s: %v", q.where, err)
			}
			if !ok {
				still = append(still, q)
			}
		}
		pending = still
	}
	for _, q := range pending {
		t.Errorf("%s: no data after 90 s: %s", q.where, expand(q.expr, job, model))
	}
	t.Logf("%d of %d dashboard queries returned data from Prometheus", len(queries)-len(pending), len(queries))

	checkREADME(t, metrics)
}

// checkREADME checks that the README's metrics table has every mlbpf_
// metric the daemon serves, with its type.
func checkREADME(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (mlbpf_\w+) (\w+)$`)
	var names []string
	for _, m := range typeLine.FindAllStringSubmatch(string(body), -1) {
		names = append(names, m[1])
		if row := fmt.Sprintf("| `%s` | %s |", m[1], m[2]); !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row starting %q", row)
		}
	}
	sort.Strings(names)
	if len(names) < 19 {
		t.Errorf("the daemon serves %d mlbpf_ metrics, want all 19 at once: %v", len(names), names)
	}
}

func TestMain(m *testing.M) {
	daemon.Register(subsystems.All()...)
	os.Exit(m.Run())
}
