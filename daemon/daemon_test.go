package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

func syscallLoad(t testing.TB) int { return testutil.SyscallLoad(t) }

type testDaemon struct {
	d    *Daemon
	cfg  *config.Config
	done chan error
	stop context.CancelFunc
}

// testConfig returns a configuration of one synthetic model on a fresh pin
// root, state directory and socket; extra is YAML added to the model.
func testConfig(t testing.TB, pid int, extra string) *config.Config {
	t.Helper()
	return daemonConfig(t, fmt.Sprintf(`
  - name: synthetic/demo
    max_mode: recommendation
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
%s`, pid, extra))
}

// daemonConfig returns a configuration of the models in YAML (the items
// of the models list) on a fresh pin root, state directory and socket,
// with a 100 ms period.
func daemonConfig(t testing.TB, models string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	y := fmt.Sprintf(`
pin_root: %s
state_dir: %s
socket: %s
interval: 100ms
models:%s`, testutil.PinRoot(t), filepath.Join(dir, "state"), filepath.Join(dir, "run", "agent.sock"), models)
	c, err := config.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t testing.TB, c *config.Config) *testDaemon {
	t.Helper()
	d, err := New(Options{Config: c, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{d: d, cfg: c, done: make(chan error, 1), stop: cancel}
	go func() { td.done <- d.Run(ctx) }()
	select {
	case <-d.Ready():
	case err := <-td.done:
		cancel()
		t.Fatalf("daemon: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("daemon not ready after 10s")
	}
	t.Cleanup(func() { td.shutdown(t) })
	return td
}

func (td *testDaemon) shutdown(t testing.TB) {
	t.Helper()
	if td.stop == nil {
		return
	}
	td.stop()
	td.stop = nil
	select {
	case err := <-td.done:
		if err != nil {
			t.Errorf("daemon: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("daemon did not stop within 10s")
	}
}

func testLog(testing.TB) *slog.Logger {
	w := io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func pinnedControl(c loader.Control) model.Control {
	return model.Control{Mode: model.Mode(c.Mode), State: model.State(c.State), LeaseExpiresNs: c.LeaseExpiresNs,
		CollabPermille: c.CollabPermille, HoldoutPermille: c.HoldoutPermille, Generation: c.Generation}
}

func (td *testDaemon) pinned(t testing.TB) loader.PinnedModel {
	t.Helper()
	pm, err := loader.ReadPinned(td.cfg.PinRoot, "synthetic", "demo")
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

// waitFor polls cond every 20 ms for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestGoodModelPromoted(t *testing.T) {
	testutil.RequireBPF(t)
	td := start(t, testConfig(t, syscallLoad(t), ""))
	waitFor(t, "RECOMMENDATION", func() bool { return model.Mode(td.pinned(t).Control.Mode) == model.ModeRecommendation })
	waitFor(t, "model decisions", func() bool { return td.pinned(t).Arms[model.ArmModel] > 0 })
	td.shutdown(t)
	pm := td.pinned(t)
	if model.State(pm.Control.State) != model.StateStopped || pm.Control.LeaseExpiresNs != 0 {
		t.Fatalf("control block after shutdown: %+v, want STOPPED without a lease", pm.Control)
	}
	ev, err := ReadEvidence(td.cfg.StateDir, "synthetic/demo")
	if err != nil || ev == nil {
		t.Fatalf("evidence: %v %v", ev, err)
	}
	if ev.Records == 0 || ev.LeaseRenewals == 0 || ev.MaxMode != "RECOMMENDATION" || len(ev.Changes) < 2 {
		t.Fatalf("evidence %+v", ev)
	}
}

func TestBadModelNeverPromoted(t *testing.T) {
	testutil.RequireBPF(t)
	td := start(t, testConfig(t, syscallLoad(t), "      adversarial: true\n"))
	s, _ := td.d.find("synthetic/demo")
	// At least 2 s and 500 records: many tests of the controller. A slow
	// machine takes longer to make the records, not fewer tests.
	start := time.Now()
	for {
		if m := s.m.Mode(); m != model.ModeLearning {
			t.Fatalf("an adversarial model reached %v", m)
		}
		ev, _ := s.snapshot()
		if ev.Records >= 500 && time.Since(start) > 2*time.Second {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("only %d records in 60s: the live hook saw too little to judge", ev.Records)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOperatorHandshake writes the control block as 'mlbpf mode', 'stop'
// and 'start' do, while the daemon runs, and checks the daemon adopts
// each change instead of undoing it.
func TestOperatorHandshake(t *testing.T) {
	td, s := startCapped(t, model.ModeCollaboration)
	c := td.cfg
	dir := loader.PinDir(c.PinRoot, "synthetic", "demo")
	write := func(fn func(*model.Control)) model.Control {
		t.Helper()
		_, after, err := loader.UpdateControl(dir, func(c *model.Control) error { fn(c); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return after
	}
	// holds checks the kernel keeps what cond wants over several periods.
	holds := func(what string, cond func(model.Control) bool) {
		t.Helper()
		for range 10 {
			time.Sleep(50 * time.Millisecond)
			if k := pinnedControl(td.pinned(t).Control); !cond(k) {
				t.Fatalf("%s: the kernel has %v", what, k)
			}
		}
	}
	waitFor(t, "RUNNING", func() bool { return td.pinned(t).Control.State == uint32(model.StateRunning) })

	// An operator's EMERGENCY is adopted, and sticks.
	write(func(c *model.Control) { c.Mode = model.ModeEmergency })
	waitFor(t, "EMERGENCY adopted", func() bool { return s.m.Mode() == model.ModeEmergency })
	holds("EMERGENCY", func(k model.Control) bool { return k.Mode == model.ModeEmergency && k.State == model.StateRunning })
	if k := pinnedControl(td.pinned(t).Control); k.LeaseExpiresNs < loader.MonotonicNs() {
		t.Fatalf("the lease is no longer renewed after EMERGENCY: %v", k)
	}

	// A mode above max_mode is capped.
	write(func(c *model.Control) { c.Mode = model.ModeRecommendation })
	waitFor(t, "capped at COLLABORATION", func() bool {
		return model.Mode(td.pinned(t).Control.Mode) == model.ModeCollaboration && s.m.Mode() == model.ModeCollaboration
	})

	// A stop is adopted and kept: no lease renewal, the hook on its
	// default.
	write(func(c *model.Control) { c.State, c.LeaseExpiresNs = model.StateStopped, 0 })
	waitFor(t, "stopped", func() bool { return s.m.State() == model.StateStopped })
	holds("STOPPED", func(k model.Control) bool { return k.State == model.StateStopped && k.LeaseExpiresNs == 0 })
	if p, _ := loadPersisted(ModelStateDir(c.StateDir, "synthetic/demo")); !p.OperatorStopped {
		t.Fatal("the operator's stop is not remembered for a restart")
	}

	// A start starts it again.
	write(func(c *model.Control) { c.State = model.StateStarted })
	// The model stores the block before it records its state: wait for both.
	waitFor(t, "running again", func() bool {
		return td.pinned(t).Control.State == uint32(model.StateRunning) && s.m.State() == model.StateRunning
	})

	// A mode that is not one means EMERGENCY.
	write(func(c *model.Control) { c.Mode = 9 })
	waitFor(t, "EMERGENCY after garbage", func() bool { return model.Mode(td.pinned(t).Control.Mode) == model.ModeEmergency })
}

// TestRestart stops a daemon with the model in EMERGENCY and operator
// stopped, and checks the next daemon adopts the pins, continues the
// generation and keeps both.
func TestRestart(t *testing.T) {
	testutil.RequireBPF(t)
	c := testConfig(t, syscallLoad(t), "")
	td := start(t, c)
	waitFor(t, "RUNNING", func() bool { return td.pinned(t).Control.State == uint32(model.StateRunning) })
	dir := loader.PinDir(c.PinRoot, "synthetic", "demo")
	if _, _, err := loader.UpdateControl(dir, func(c *model.Control) error { c.Mode = model.ModeEmergency; return nil }); err != nil {
		t.Fatal(err)
	}
	s, _ := td.d.find("synthetic/demo")
	waitFor(t, "EMERGENCY", func() bool { return s.m.Mode() == model.ModeEmergency })
	td.shutdown(t)
	before := td.pinned(t).Control

	// A second daemon on the same socket is refused while the first runs;
	// here the first has stopped, so the next one starts.
	td2 := start(t, c)
	s2, _ := td2.d.find("synthetic/demo")
	if s2.m.Mode() != model.ModeEmergency {
		t.Fatalf("restarted in %v, want the EMERGENCY the pins were left in", s2.m.Mode())
	}
	if after := td2.pinned(t).Control; int32(after.Generation-before.Generation) <= 0 {
		t.Fatalf("generation %d after restart, was %d", after.Generation, before.Generation)
	}
	if err := start2(c); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) {
		t.Fatalf("second daemon: %v", err)
	}
}

// start2 runs a second daemon on c, which must refuse.
func start2(c *config.Config) error {
	d, err := New(Options{Config: c})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Run(ctx)
}

func TestMetrics(t *testing.T) {
	testutil.RequireBPF(t)
	td := start(t, testConfig(t, syscallLoad(t), ""))
	waitFor(t, "records", func() bool { ev, _ := td.d.sups[0].snapshot(); return ev.Records > 0 })
	srv := httptest.NewServer(td.d.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`mlbpf_records_total{model="synthetic/demo"}`,
		`mlbpf_records_lost_total{model="synthetic/demo"}`,
		`mlbpf_decisions_total{arm="shadow",model="synthetic/demo"}`,
		`mlbpf_lease_renewals_total{model="synthetic/demo"}`,
		`mlbpf_efficiency_effect{model="synthetic/demo"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	mode := 0
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "mlbpf_mode{") && strings.HasSuffix(l, " 1") {
			mode++
		}
	}
	if mode != 1 {
		t.Errorf("%d modes at 1, want exactly one", mode)
	}
}

// TestRestartContinuesEvidence stops a daemon that has gathered evidence
// in LEARNING and checks the next daemon's controller starts from that
// evidence, and that evidence from another mode is not carried over.
func TestRestartContinuesEvidence(t *testing.T) {
	td, s := startCapped(t, model.ModeLearning)
	c := td.cfg
	waitFor(t, "shadow outcomes", func() bool { return s.m.Controller().Evidence().Shadow.N >= 40 })
	td.shutdown(t)
	dir := ModelStateDir(c.StateDir, "synthetic/demo")
	saved, err := loadController(dir)
	if err != nil || saved == nil {
		t.Fatalf("controller.json after shutdown: %v %v", saved, err)
	}
	if saved.Evidence.Mode != model.ModeLearning || saved.Evidence.Diff.N < 40 {
		t.Fatalf("saved evidence: mode %v, %d paired outcomes; want LEARNING and at least 40", saved.Evidence.Mode, saved.Evidence.Diff.N)
	}

	// open is what a restarted daemon does first; nothing runs yet, so the
	// evidence must be exactly what was saved.
	reopen := func() model.Evidence {
		t.Helper()
		s2, closeOpened := openOnly(t, c)
		defer closeOpened()
		return s2.m.Controller().Evidence()
	}
	ev := reopen()
	if ev.Shadow.N != saved.Evidence.Diff.N || ev.Arms[model.ArmShadow].N != saved.Evidence.Arms[model.ArmShadow].N ||
		ev.Shadow.Effect != saved.Evidence.Diff.Mean {
		t.Fatalf("restarted controller: %d paired, %d shadow outcomes, effect %v; saved %d, %d, %v",
			ev.Shadow.N, ev.Arms[model.ArmShadow].N, ev.Shadow.Effect,
			saved.Evidence.Diff.N, saved.Evidence.Arms[model.ArmShadow].N, saved.Evidence.Diff.Mean)
	}

	// An operator's EMERGENCY while the daemon was down: the daemon resumes
	// EMERGENCY, and the LEARNING evidence is not carried over.
	if _, _, err := loader.UpdateControl(loader.PinDir(c.PinRoot, "synthetic", "demo"), func(c *model.Control) error {
		c.Mode = model.ModeEmergency
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ev := reopen(); ev.Shadow.N != 0 || ev.Arms[model.ArmShadow].N != 0 {
		t.Fatalf("evidence gathered in LEARNING carried into EMERGENCY: %+v", ev.Arms)
	}
}

// TestPortionsOutliveTheDaemon: the portions a daemon retains are offered
// again, byte for byte, by the next daemon, which continues the stream's
// offsets after them; a discarded portion stays discarded, and a damaged
// spool file is set aside without stopping the daemon.
func TestPortionsOutliveTheDaemon(t *testing.T) {
	td, s := startCapped(t, model.ModeLearning)
	c := td.cfg
	waitFor(t, "three portions", func() bool { return len(s.hub.offsets()) >= 3 })
	td.shutdown(t)
	dir := filepath.Join(ModelStateDir(c.StateDir, "synthetic/demo"), "portions")
	files, _ := filepath.Glob(filepath.Join(dir, "*.portion"))
	if len(files) < 3 || len(files) > retainPortions {
		t.Fatalf("%d portion files after shutdown, want 3 to %d", len(files), retainPortions)
	}
	want := map[uint64][]byte{}
	var next uint64
	for _, f := range files {
		p, err := readSpooled(f, s.hub.format, "synthetic/demo")
		if err != nil {
			t.Fatal(err)
		}
		want[p.meta.Offset] = p.ds.Data
		next = max(next, p.ds.NextOffset())
	}
	// A damaged file beside them.
	bad := filepath.Join(dir, fmt.Sprintf("%020d.portion", next+1000))
	if err := os.WriteFile(bad, []byte("{\"version\":1}\nxx"), 0o600); err != nil {
		t.Fatal(err)
	}

	// What a restarted daemon opens, before anything runs: exactly the
	// spooled portions.
	s2, closeOpened := openOnly(t, c)
	offs := s2.hub.offsets()
	if len(offs) != len(want) {
		t.Fatalf("offsets %v offered after the restart, want the %d spooled", offs, len(want))
	}
	for _, off := range offs {
		p, err := s2.hub.fetch(&off, false, true)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[off]; !ok || !bytes.Equal(p.Data, w) {
			t.Fatalf("portion %d after the restart: %d bytes, want the %d spooled", off, len(p.Data), len(w))
		}
	}
	if _, err := os.Stat(bad + ".bad"); err != nil {
		t.Fatalf("the damaged spool file was not set aside: %v", err)
	}
	// A discarded portion is gone for good.
	if _, err := s2.hub.discard(&offs[0], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.portion", offs[0]))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded portion %d still spooled: %v", offs[0], err)
	}
	closeOpened()
	if left, _ := filepath.Glob(filepath.Join(dir, "*.portion")); len(left) != len(want)-1 {
		t.Fatalf("%d portion files after a discard and a close, want %d", len(left), len(want)-1)
	}

	// A running daemon continues the stream after the kept portions.
	td2 := start(t, c)
	s3, _ := td2.d.find("synthetic/demo")
	waitFor(t, "a new portion", func() bool {
		o := s3.hub.offsets()
		return len(o) > 0 && o[len(o)-1] >= next
	})
	for _, off := range s3.hub.offsets() {
		if _, old := want[off]; !old && off < next {
			t.Fatalf("new portion at offset %d, inside the stream kept from before (up to %d)", off, next)
		}
	}
}

// openOnly opens c's first model as a restarted daemon does first, without
// running it; the function returned closes it.
func openOnly(t *testing.T, c *config.Config) (*supervisor, func()) {
	t.Helper()
	d, err := New(Options{Config: c, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.open(&c.Models[0])
	if err != nil {
		t.Fatal(err)
	}
	return s, func() {
		s.hub.close()
		s.lock.dir.Close()
		s.r.Close()
	}
}

// startCapped starts a daemon running the synthetic model on a live load,
// its mode capped at maxMode.
func startCapped(t *testing.T, maxMode model.Mode) (*testDaemon, *supervisor) {
	t.Helper()
	testutil.RequireBPF(t)
	c := testConfig(t, syscallLoad(t), "")
	c.Models[0].MaxMode = config.Mode(maxMode)
	td := start(t, c)
	s, err := td.d.find("synthetic/demo")
	if err != nil {
		t.Fatal(err)
	}
	return td, s
}
