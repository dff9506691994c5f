package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

type syncBuffer = testutil.SyncBuffer

// mlbpf runs the command line in-process.
func mlbpf(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// mustMlbpf runs the command line and fails the test on an error.
func mustMlbpf(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := mlbpf(t, args...)
	if err != nil {
		t.Fatalf("mlbpf %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func TestHelp(t *testing.T) {
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			out, _, err := mlbpf(t, c.name, "--help")
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("--help: %v", err)
			}
			if !strings.Contains(out, "Usage: mlbpf "+c.name) || !strings.Contains(out, "Examples:") {
				t.Fatalf("--help shows no usage with examples:\n%s", out)
			}
		})
	}
	for _, sub := range []string{"get", "discard", "export"} {
		out, _, err := mlbpf(t, "dataset", sub, "-h")
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out, "Examples:") {
			t.Errorf("dataset %s -h: %v\n%s", sub, err, out)
		}
	}
	out, _, err := mlbpf(t, "help")
	if err != nil || !strings.Contains(out, "rollback") || strings.Contains(out, "__models") {
		t.Fatalf("help: %v\n%s", err, out)
	}
	if out, _, _ := mlbpf(t, "help", "mode"); !strings.Contains(out, "Usage: mlbpf mode") {
		t.Fatalf("help mode:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"fly"},
		{"mode", "tcp/cc"},
		{"status", "--bogus"},
		{"dataset"},
		{"dataset", "fly", "synthetic/demo"},
		{"config"},
		{"completion"},
	} {
		_, errOut, err := mlbpf(t, args...)
		if !errors.Is(err, errUsage) {
			t.Errorf("mlbpf %s: %v, want a usage error", strings.Join(args, " "), err)
		}
		if errOut == "" {
			t.Errorf("mlbpf %s: nothing on stderr", strings.Join(args, " "))
		}
	}
	_, _, err := mlbpf(t, "mode", "tcp/cc", "turbo")
	if err == nil || !strings.Contains(err.Error(), `unknown mode "turbo" (want emergency, learning, collaboration, recommendation)`) {
		t.Fatalf("mode turbo: %v", err)
	}
	_, _, err = mlbpf(t, "run", "--metrics-addr", "0.0.0.0:9464")
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("non-loopback metrics: %v", err)
	}
	_, _, err = mlbpf(t, "run", "--config", "../../testdata/config/bad/max_mode.yaml")
	if err == nil || err.Error() != `max_mode.yaml:7: models[0].max_mode: unknown mode "turbo" (want emergency, learning, collaboration, recommendation)` {
		t.Fatalf("bad config: %v", err)
	}
}

func TestConfigCommands(t *testing.T) {
	out := mustMlbpf(t, "config", "default")
	if _, err := config.Parse("default.yaml", []byte(out)); err != nil || !strings.Contains(out, "tcp/cc") {
		t.Fatalf("config default does not parse: %v\n%s", err, out)
	}
	out = mustMlbpf(t, "config", "check", "../../testdata/config/good/tcp.toml")
	if !strings.Contains(out, "ok, runs tcp/cc") {
		t.Fatalf("config check: %s", out)
	}
	_, _, err := mlbpf(t, "config", "check", "../../testdata/config/bad/unknown_field.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "unknown_field.yaml:5: models[0].leese: unknown field") {
		t.Fatalf("config check bad: %v", err)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	if out := mustMlbpf(t, "version"); !strings.HasPrefix(out, "mlbpf dev (go") {
		t.Fatalf("version: %s", out)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(mustMlbpf(t, "version", "-o", "json")), &v); err != nil || v["version"] != "dev" {
		t.Fatalf("version -o json: %v %v", v, err)
	}
	for _, shell := range []string{"bash", "zsh"} {
		out := mustMlbpf(t, "completion", shell)
		if !strings.Contains(out, "rollback") || !strings.Contains(out, "emergency learning collaboration recommendation") {
			t.Fatalf("%s completion:\n%s", shell, out)
		}
		if path, err := exec.LookPath(shell); err == nil {
			cmd := exec.Command(path, "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, b)
			}
		}
	}
}

func syscallLoad(t *testing.T) int { return testutil.SyscallLoad(t) }

// freePort returns a loopback port nobody listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// session is a daemon run in-process by 'mlbpf run', on its own pin
// root, state directory and socket.
type session struct {
	t      *testing.T
	config string
	flags  []string // --config and the paths
	root   string
	state  string
	socket string
	logs   *syncBuffer
	done   chan error
	cancel context.CancelFunc
}

func newSession(t *testing.T, yaml string) *session {
	t.Helper()
	testutil.RequireBPF(t)
	dir := t.TempDir()
	s := &session{t: t, root: testutil.PinRoot(t), state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "agent.sock")}
	s.config = filepath.Join(dir, "mlbpf.yaml")
	if err := os.WriteFile(s.config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s.flags = []string{"--config", s.config, "--pin-root", s.root, "--state-dir", s.state, "--socket", s.socket}
	return s
}

// cmd runs an mlbpf command of the session.
func (s *session) cmd(args ...string) (string, error) {
	s.t.Helper()
	out, errOut, err := mlbpf(s.t, append(args, s.flags...)...)
	if err != nil && errOut != "" {
		err = fmt.Errorf("%w (stderr: %s)", err, errOut)
	}
	return out, err
}

func (s *session) must(args ...string) string {
	s.t.Helper()
	out, err := s.cmd(args...)
	if err != nil {
		s.t.Fatalf("mlbpf %s: %v\n%s\nlogs:\n%s", strings.Join(args, " "), err, out, s.logs)
	}
	return out
}

// start runs the daemon and waits until synthetic/demo runs.
func (s *session) start(extra ...string) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.logs, s.done, s.cancel = &syncBuffer{}, make(chan error, 1), cancel
	args := append([]string{"run", "--log-level", "debug"}, append(s.flags, extra...)...)
	go func() { s.done <- run(ctx, args, io.Discard, s.logs) }()
	s.waitFor("the daemon to run synthetic/demo", func() bool {
		select {
		case err := <-s.done:
			s.done <- err
			s.t.Fatalf("daemon ended: %v\n%s", err, s.logs)
		default:
		}
		st, err := s.status()
		// synthetic/demo comes first: status lists the pins by name.
		return err == nil && len(st) > 0 && st[0].Model == "synthetic/demo" && st[0].State == "RUNNING"
	})
	s.t.Cleanup(func() { s.stop() })
}

func (s *session) stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		return err
	case <-time.After(15 * time.Second):
		s.t.Fatal("daemon did not stop")
		return nil
	}
}

// rollback runs 'mlbpf rollback' against the session's daemon and waits
// for the daemon to end cleanly, as rollback makes it.
func (s *session) rollback() {
	s.t.Helper()
	out := s.must("rollback")
	if !strings.Contains(out, "EMERGENCY, STOPPED") || !strings.Contains(out, "pins removed") {
		s.t.Fatalf("rollback:\n%s", out)
	}
	select {
	case err := <-s.done:
		s.cancel = nil
		if err != nil {
			s.t.Fatalf("the daemon after rollback: %v", err)
		}
	case <-time.After(10 * time.Second):
		s.t.Fatal("the daemon still runs after rollback")
	}
}

func (s *session) status() ([]modelStatus, error) {
	out, err := s.cmd("status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st []modelStatus
	return st, json.Unmarshal([]byte(out), &st)
}

func (s *session) waitFor(what string, cond func() bool) {
	s.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		if cond() {
			return
		}
	}
	s.t.Fatalf("timed out waiting for %s\n%s\nlogs:\n%s", what, s.kernelView(), s.logs)
}

// kernelView says what the kernel holds for the session's models, for a
// failure message: the logs show what the daemon did, this what the
// kernel decided (mode, state, lease, arms).
func (s *session) kernelView() string {
	pms, err := loader.ListPinned(s.root)
	var b strings.Builder
	fmt.Fprintf(&b, "the kernel at %d ns:", loader.MonotonicNs())
	for _, pm := range pms {
		fmt.Fprintf(&b, "\n  %s/%s: %v, arms %v, lost %d", pm.Subsystem, pm.Model, pinnedControl(pm.Control), pm.Arms, pm.Lost)
	}
	if err != nil {
		fmt.Fprintf(&b, "\n  reading the pins: %v", err)
	}
	return b.String()
}

func (s *session) control() model.Control {
	s.t.Helper()
	pm, err := loader.ReadPinned(s.root, "synthetic", "demo")
	if err != nil {
		s.t.Fatal(err)
	}
	return pinnedControl(pm.Control)
}

const sessionConfig = `
interval: 100ms
models:
  - name: synthetic/demo
    mode: learning
    max_mode: collaboration
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
`

// TestOperatorSession walks through the README's operator session, run to
// rollback, against a daemon run by 'mlbpf run'.
func TestOperatorSession(t *testing.T) {
	s := newSession(t, fmt.Sprintf(sessionConfig, syscallLoad(t)))
	metrics := freePort(t)
	s.start("--metrics-addr", metrics)

	// A second daemon refuses, naming the first.
	_, err := s.cmd("run")
	if !errors.Is(err, daemon.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("process %d holds", os.Getpid())) {
		t.Fatalf("second daemon: %v", err)
	}

	// status, both ways.
	s.waitFor("COLLABORATION", func() bool {
		st, err := s.status()
		return err == nil && st[0].Mode == "COLLABORATION"
	})
	// The daemon keeps the model's history; 'mlbpf report' reads it while
	// the daemon runs (the promotion's period is appended once it ends).
	page := filepath.Join(t.TempDir(), "report.html")
	s.waitFor("the promotion in the report", func() bool {
		s.must("report", "synthetic/demo", "-o", page)
		b, err := os.ReadFile(page)
		return err == nil && strings.Contains(string(b), "LEARNING → COLLABORATION")
	})
	st, _ := s.status()
	if !st[0].Live || st[0].Daemon == nil || st[0].Daemon.MaxMode != "COLLABORATION" || st[0].LeaseLeft == nil || st[0].Arms["shadow"] == 0 {
		t.Fatalf("status: %+v", st[0])
	}
	// The evidence (and its decision) is published a period after the
	// mode it was taken in: a slow VM shows the mode first.
	wants := []string{"daemon: running, pid", "synthetic/demo", "COLLABORATION", "shadow=", "decision:"}
	var out string
	s.waitFor("status with the controller's decision", func() bool {
		out = s.must("status")
		for _, want := range wants {
			if !strings.Contains(out, want) {
				return false
			}
		}
		return true
	})

	// mode: above max_mode is refused; EMERGENCY is adopted and sticks.
	if _, err := s.cmd("mode", "synthetic/demo", "recommendation"); err == nil || !strings.Contains(err.Error(), "above the daemon's max_mode COLLABORATION") {
		t.Fatalf("mode above max_mode: %v", err)
	}
	out = s.must("mode", "synthetic/demo", "emergency")
	// The command returns once the kernel has EMERGENCY; the kernel keeps
	// it, the daemon says EMERGENCY and renews the lease again.
	if !strings.Contains(out, "-> RUNNING EMERGENCY") || !strings.Contains(out, "holds it: the kernel has RUNNING EMERGENCY") {
		t.Fatalf("mode emergency:\n%s", out)
	}
	written := s.control()
	var adopted model.Control
	s.waitFor("the daemon to adopt EMERGENCY", func() bool {
		c := s.control()
		if c.Mode != model.ModeEmergency || c.State != model.StateRunning {
			t.Fatalf("while the daemon adopts the operator's EMERGENCY the kernel has %v", c)
		}
		st, err := s.status()
		if err == nil && st[0].Live && st[0].Daemon.Mode == "EMERGENCY" && c.LeaseExpiresNs > written.LeaseExpiresNs {
			adopted = c
			return true
		}
		return false
	})
	// Five periods later, by the daemon's own clock (its lease renewals),
	// the operator's EMERGENCY still holds.
	s.waitFor("five more periods", func() bool {
		c := s.control()
		if c.Mode != model.ModeEmergency || c.State != model.StateRunning {
			t.Fatalf("after the daemon adopted it the kernel has %v: the operator's EMERGENCY did not stick", c)
		}
		return c.LeaseExpiresNs >= adopted.LeaseExpiresNs+uint64(5*100*time.Millisecond)
	})
	var ch controlChange
	if err := json.Unmarshal([]byte(s.must("mode", "synthetic/demo", "learning", "-o", "json")), &ch); err != nil || ch.After.Mode != "LEARNING" || ch.DaemonPID != os.Getpid() {
		t.Fatalf("mode learning -o json: %+v %v", ch, err)
	}

	// stop and start.
	out = s.must("stop", "synthetic/demo")
	if !strings.Contains(out, "-> STOPPED") {
		t.Fatalf("stop:\n%s", out)
	}
	// The daemon adopts the stop (its status says so), and then neither
	// restarts the model nor renews its lease.
	s.waitFor("the status to say the operator stopped it", func() bool {
		return strings.Contains(s.must("status"), "stopped by an operator")
	})
	if c := s.control(); c.State != model.StateStopped || c.LeaseExpiresNs != 0 {
		t.Fatalf("after stop the kernel has %v", c)
	}
	s.must("start", "synthetic/demo")
	s.waitFor("RUNNING again", func() bool { return s.control().State == model.StateRunning })

	// recommend, validated by the subsystem.
	var rec struct{ Key, Value string }
	if err := json.Unmarshal([]byte(s.must("recommend", "synthetic/demo", " 5", "42", "-o", "json")), &rec); err != nil || rec.Key != "5" || rec.Value != "42" {
		t.Fatalf("recommend: %+v %v", rec, err)
	}
	if _, err := s.cmd("recommend", "synthetic/demo", "5", "99999999"); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("out-of-range recommendation: %v", err)
	}
	if _, err := s.cmd("recommend", "synthetic/demo", "five", "1"); err == nil || !strings.Contains(err.Error(), "unsigned 32-bit integer") {
		t.Fatalf("malformed recommendation: %v", err)
	}

	// dataset get, export, discard, from the daemon.
	var portion struct {
		Offset  uint64
		Size    uint32
		State   string
		Records []struct{ Key, Applied uint32 }
	}
	s.waitFor("a portion", func() bool {
		out, err := s.cmd("dataset", "get", "synthetic/demo", "--max-records", "3")
		// A slow machine (a VM under TCG) may publish a portion of
		// fewer records than asked for: wait for one that has them.
		return err == nil && json.Unmarshal([]byte(out), &portion) == nil && portion.Size >= 3
	})
	if len(portion.Records) != 3 {
		t.Fatalf("dataset get --max-records 3: %+v", portion)
	}
	file := filepath.Join(t.TempDir(), "demo.jsonl")
	out = s.must("dataset", "export", "synthetic/demo", "-o", file)
	if !strings.Contains(out, "written to "+file) {
		t.Fatalf("export: %s", out)
	}
	rows := countLines(t, file)
	if rows < int(portion.Size) {
		t.Fatalf("export: %d rows, the newest portion alone has %d", rows, portion.Size)
	}
	if out := s.must("dataset", "discard", "synthetic/demo"); !strings.Contains(out, "released") {
		t.Fatalf("discard: %s", out)
	}

	// metrics.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `mlbpf_mode{mode="LEARNING",model="synthetic/demo"}`) || !strings.Contains(string(body), "mlbpf_decisions_total") {
		t.Fatalf("/metrics:\n%.2000s", body)
	}

	// rollback: dry run first, then for real; the daemon exits.
	out = s.must("rollback", "--dry-run")
	for _, want := range []string{"would roll back 1 model", "bpftool map update pinned " + filepath.Join(s.root, "synthetic/demo/control"),
		"rm -r " + filepath.Join(s.root, "synthetic/demo")} {
		if !strings.Contains(out, want) {
			t.Errorf("rollback --dry-run has no %q:\n%s", want, out)
		}
	}
	if c := s.control(); c.Mode == model.ModeEmergency {
		t.Fatal("the dry run changed the mode")
	}
	s.rollback()
	if _, err := os.Stat(filepath.Join(s.root, "synthetic")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pins left after rollback: %v", err)
	}
	for _, want := range []string{"operator changed the control block", "model stopped by the operator", "recommendation written", "shutdown requested"} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("the logs do not say %q", want)
		}
	}
}

// TestWithoutDaemon runs the commands on the pins a stopped daemon left.
func TestWithoutDaemon(t *testing.T) {
	pid := syscallLoad(t)
	s := newSession(t, fmt.Sprintf(sessionConfig, pid))
	s.start()
	s.waitFor("records", func() bool { return s.control().Generation > 0 && len(s.logs.String()) > 0 })
	time.Sleep(200 * time.Millisecond)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if c := s.control(); c.State != model.StateStopped {
		t.Fatalf("after the daemon stopped: %v", c)
	}

	out := s.must("status")
	if !strings.Contains(out, "daemon: not running") || !strings.Contains(out, "(last run)") {
		t.Fatalf("status:\n%s", out)
	}
	out = s.must("mode", "synthetic/demo", "emergency")
	if !strings.Contains(out, "no daemon is running") {
		t.Fatalf("mode without daemon:\n%s", out)
	}
	if c := s.control(); c.Mode != model.ModeEmergency {
		t.Fatalf("mode not written: %v", c)
	}
	out = s.must("recommend", "synthetic/demo", "7", "8")
	if !strings.Contains(out, "7 -> 8 written through the pinned maps") {
		t.Fatalf("recommend without daemon: %s", out)
	}
	s.must("stop", "synthetic/demo") // already stopped: nothing to do, but remembered

	// The ring holds what was collected after the daemon's last read
	// (the load keeps running, but the hook is on its default and still
	// records): get consumes it.
	var portion struct {
		Size    uint32
		Records []json.RawMessage
	}
	if err := json.Unmarshal([]byte(s.must("dataset", "get", "synthetic/demo")), &portion); err != nil {
		t.Fatal(err)
	}
	if int(portion.Size) != len(portion.Records) {
		t.Fatalf("portion of %d records lists %d", portion.Size, len(portion.Records))
	}
	if out := s.must("dataset", "discard", "synthetic/demo"); !strings.Contains(out, "dropped from the ring") {
		t.Fatalf("discard without daemon: %s", out)
	}
	file := filepath.Join(t.TempDir(), "demo.csv")
	s.must("dataset", "export", "synthetic/demo", "--format", "csv", "-o", file)
	if n := countLines(t, file); n < 1 {
		t.Fatalf("csv export has %d lines, want a header at least", n)
	}

	// The next daemon keeps the operator's EMERGENCY and stop: checked on
	// every poll until it has published its evidence twice (evidence is
	// rewritten every couple of seconds: many periods apart, however slow
	// the machine). With the model stopped no applier is attached, so
	// there are no decisions to wait for.
	restarted := time.Now()
	s.start2()
	var first time.Time
	s.waitFor("the restarted daemon's evidence, twice", func() bool {
		if c := s.control(); c.Mode != model.ModeEmergency || c.State == model.StateRunning {
			t.Fatalf("after a restart the kernel has %v: EMERGENCY and the operator's stop must stay", c)
		}
		st, err := s.status()
		if err != nil || st[0].Daemon == nil || !st[0].Daemon.Updated.After(restarted) {
			return false // not yet published by the restarted daemon
		}
		if ev := st[0].Daemon; !ev.OperatorStopped || ev.Running || ev.Mode != "EMERGENCY" {
			t.Fatalf("the restarted daemon says %s %s, running %v, operator stopped %v: EMERGENCY and the operator's stop must stay",
				ev.State, ev.Mode, ev.Running, ev.OperatorStopped)
		}
		if first.IsZero() {
			first = st[0].Daemon.Updated
		}
		return st[0].Daemon.Updated.After(first)
	})
	s.must("start", "synthetic/demo")
	s.waitFor("RUNNING", func() bool { return s.control().State == model.StateRunning })
	if c := s.control(); c.Mode != model.ModeEmergency {
		t.Fatalf("start changed the mode: %v", c)
	}
}

// start2 runs the daemon without waiting for the model to run (it may be
// stopped by an operator).
func (s *session) start2() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.logs, s.done, s.cancel = &syncBuffer{}, make(chan error, 1), cancel
	args := append([]string{"run"}, s.flags...)
	go func() { s.done <- run(ctx, args, io.Discard, s.logs) }()
	s.waitFor("the daemon", func() bool {
		pid, running := daemon.Holder(daemon.LockPath(s.socket))
		_, err := os.Stat(s.socket)
		return running && pid == os.Getpid() && err == nil
	})
	s.t.Cleanup(func() { s.stop() })
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	return n
}

func TestMain(m *testing.M) {
	if os.Getenv(asMlbpf) != "" {
		main() // this binary stands in for mlbpf: see mlbpfBinary
		os.Exit(0)
	}
	before := testutil.OpenFDs()
	code := m.Run()
	removeBinary()
	if after := testutil.OpenFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "file descriptors leaked: %d open before the tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}
