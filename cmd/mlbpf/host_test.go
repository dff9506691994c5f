package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// bin runs the built mlbpf binary with the session's paths, returning its
// stdout, and its stderr in the error.
func (s *session) bin(args ...string) (string, error) {
	s.t.Helper()
	cmd := mlbpfCommand(s.t, append(args, s.flags...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("mlbpf %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

func (s *session) mustBin(args ...string) string {
	s.t.Helper()
	out, err := s.bin(args...)
	if err != nil {
		s.t.Fatalf("%v\nlogs:\n%s", err, s.logs)
	}
	return out
}

// entries lists a model's recommendations with the binary, -o json.
func (s *session) entries(name string) map[string]agent.Entry {
	s.t.Helper()
	var es []agent.Entry
	if err := json.Unmarshal([]byte(s.mustBin("recommendations", name, "-o", "json")), &es); err != nil {
		s.t.Fatal(err)
	}
	m := map[string]agent.Entry{}
	for _, e := range es {
		m[e.Key] = e
	}
	return m
}

// TestWithdrawAndList runs the binary against a daemon process: the
// per-key listing says who wrote each key, when and on what evidence; an
// operator's key and a learned one are withdrawn (exit 0 only once gone
// from the kernel's map), an invalid key is refused; with no daemon the
// same commands work on the pins.
func TestWithdrawAndList(t *testing.T) {
	s := newSession(t, fmt.Sprintf(sessionConfig, syscallLoad(t)))
	p := s.spawn()

	// The learner writes keys, with the outcomes fed back for them.
	var learned agent.Entry
	s.waitFor("a learned key with evidence", func() bool {
		for _, e := range s.entries("synthetic/demo") {
			if e.By == "learner" && e.Written != "" && len(e.Evidence) > 0 {
				learned = e
				return true
			}
		}
		return false
	})
	if _, err := time.Parse(time.RFC3339, learned.Written); err != nil {
		t.Errorf("written: %v", err)
	}

	s.mustBin("recommend", "synthetic/demo", "4000000", "7")
	e, ok := s.entries("synthetic/demo")["4000000"]
	if !ok || e.By != "operator" || e.Value != "7" || e.Written == "" {
		t.Fatalf("the operator's key: %+v (present %v)", e, ok)
	}
	out := s.mustBin("recommendations", "synthetic/demo")
	for _, want := range []string{"KEY", "4000000", "operator", "learner", "EVIDENCE"} {
		if !strings.Contains(out, want) {
			t.Errorf("the listing has no %q:\n%s", want, out)
		}
	}

	// Withdrawn through the daemon: gone from the kernel's map.
	out = s.mustBin("recommend", "--withdraw", "synthetic/demo", " 4000000 ")
	if !strings.Contains(out, "4000000 withdrawn through the daemon") {
		t.Errorf("withdraw: %s", out)
	}
	if _, ok := s.entries("synthetic/demo")["4000000"]; ok {
		t.Fatal("the operator's key is still listed")
	}
	if _, ok := s.pinnedRecommendation(4000000); ok {
		t.Fatal("the operator's key is still in the kernel's map")
	}
	s.mustBin("recommend", "--withdraw", "synthetic/demo", learned.Key)
	if _, ok := s.entries("synthetic/demo")[learned.Key]; ok {
		t.Fatal("the learned key is still listed")
	}
	// Validated like a recommendation.
	if _, err := s.bin("recommend", "--withdraw", "synthetic/demo", "x"); err == nil || !strings.Contains(err.Error(), "unsigned 32-bit") {
		t.Errorf("an invalid key: %v", err)
	}
	if _, err := s.bin("recommend", "--withdraw", "synthetic/demo"); err == nil {
		t.Error("withdraw with no key: exit 0")
	}

	// No daemon: on the pins.
	p.signal(syscall.SIGTERM)
	if code, _ := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("the daemon exited %d\n%s", code, p.logs)
	}
	s.mustBin("recommend", "synthetic/demo", "4000001", "9")
	es := s.entries("synthetic/demo")
	if e := es["4000001"]; e.Value != "9" {
		t.Fatalf("on the pins: %+v", es)
	}
	out = s.mustBin("recommend", "--withdraw", "synthetic/demo", "4000001")
	if !strings.Contains(out, "the pinned maps") {
		t.Errorf("withdraw on the pins: %s", out)
	}
	if _, ok := s.pinnedRecommendation(4000001); ok {
		t.Fatal("withdrawn on the pins, still in the map")
	}
}

// pinnedRecommendation reads synthetic/demo's pinned map for key, as the
// kernel does.
func (s *session) pinnedRecommendation(key uint32) (uint32, bool) {
	s.t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(s.root, "synthetic", "demo", "recommend"), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	defer m.Close()
	var v struct{ Value, Generation uint32 }
	if err := m.Lookup(key, &v); err != nil {
		return 0, false
	}
	return v.Value, true
}

// TestReload runs the binary against a daemon process: a reload raising
// max_mode lets the controller promote the model it runs, without a
// restart, a re-attach or a lost record; SIGHUP does the same; an invalid
// file, or a change that cannot apply live, is refused whole and changes
// nothing; a model added by a reload runs, and one removed stops.
func TestReload(t *testing.T) {
	load := syscallLoad(t)
	const base = `
interval: 100ms
models:
  - name: synthetic/demo
    mode: learning
    max_mode: %s
    controller:
      min_samples: 20
    lease: 3s
    synthetic:
      pid: %d
`
	s := newSession(t, fmt.Sprintf(base, "learning", load))
	p := s.spawn("--keep-capabilities")
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(s.config, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := func() modelStatus {
		t.Helper()
		all, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range all {
			if m.Model == "synthetic/demo" {
				return m
			}
		}
		t.Fatalf("no synthetic/demo in %+v", all)
		return modelStatus{}
	}
	// Learned keys, records: what a reload must keep.
	s.waitFor("records and learned keys", func() bool {
		m := st()
		return m.Daemon != nil && m.Daemon.Records > 0 && len(s.entries("synthetic/demo")) > 0
	})
	before := st()
	if before.Mode != "LEARNING" || before.Daemon.MaxMode != "LEARNING" {
		t.Fatalf("before: %s, max_mode %s", before.Mode, before.Daemon.MaxMode)
	}
	keys := s.entries("synthetic/demo")

	// Invalid: refused whole, nothing changes.
	write(fmt.Sprintf(base, "collaboration", load) + "  - name: synthetic/demo\n") // a duplicate entry
	if out, err := s.bin("reload"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("an invalid file: %v\n%s", err, out)
	}
	// (The paths come from the command line, over the file: the log
	// format does not.)
	write(strings.Replace(fmt.Sprintf(base, "collaboration", load), "interval: 100ms", "interval: 100ms\nlog:\n  format: json", 1))
	_, err := s.bin("reload")
	if err == nil || !strings.Contains(err.Error(), "log.format") || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("a log format change: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // a promotion, had max_mode changed, takes 20 samples: a few periods
	if m := st(); m.Daemon.MaxMode != "LEARNING" || m.Mode != "LEARNING" {
		t.Fatalf("after refused reloads: %s, max_mode %s", m.Mode, m.Daemon.MaxMode)
	}

	// max_mode raised: the controller promotes, the daemon stays.
	write(fmt.Sprintf(base, "collaboration", load))
	out := s.mustBin("reload")
	if !strings.Contains(out, "max_mode LEARNING → COLLABORATION") {
		t.Errorf("reload: %s", out)
	}
	s.waitFor("the controller to promote", func() bool { return st().Mode == "COLLABORATION" })
	after := st()
	if after.Daemon.PID != p.pid() || after.Daemon.Records < before.Daemon.Records || after.Generation <= before.Generation {
		t.Fatalf("after the reload: pid %d (was %d), records %d (were %d)", after.Daemon.PID, p.pid(), after.Daemon.Records, before.Daemon.Records)
	}
	now := s.entries("synthetic/demo")
	for k, e := range keys {
		if now[k].Value != e.Value {
			t.Errorf("key %s: %q after the reload, %q before", k, now[k].Value, e.Value)
		}
	}

	// SIGHUP lowers it again: the mode follows at once.
	write(fmt.Sprintf(base, "learning", load))
	p.signal(syscall.SIGHUP)
	s.waitFor("SIGHUP to lower max_mode", func() bool {
		m := st()
		return m.Mode == "LEARNING" && m.Daemon.MaxMode == "LEARNING"
	})

	// A model added runs; removed, it stops.
	write(fmt.Sprintf(base, "learning", load) + fmt.Sprintf("  - name: synthetic/other\n    synthetic:\n      pid: %d\n", load))
	out = s.mustBin("reload", "-o", "json")
	if !strings.Contains(out, "synthetic/other: added") {
		t.Errorf("reload adding a model: %s", out)
	}
	running := func(name string) bool {
		all, _ := s.status()
		for _, m := range all {
			if m.Model == name {
				return m.State == "RUNNING" && m.Live
			}
		}
		return false
	}
	s.waitFor("synthetic/other to run", func() bool { return running("synthetic/other") })
	write(fmt.Sprintf(base, "learning", load))
	s.mustBin("reload")
	s.waitFor("synthetic/other to stop", func() bool {
		pm, err := loader.ReadPinned(s.root, "synthetic", "other")
		return err == nil && model.State(pm.Control.State) == model.StateStopped
	})
	if !running("synthetic/demo") {
		t.Error("synthetic/demo stopped with the other")
	}
	p.signal(syscall.SIGTERM)
	if code, _ := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("the daemon exited %d\n%s", code, p.logs)
	}
}

// TestManPage: mlbpf(8) holds every command's help, and no line of it
// that roff would take for a request.
func TestManPage(t *testing.T) {
	out := mustMlbpf(t, "__man")
	if !strings.HasPrefix(out, ".TH MLBPF 8") {
		t.Fatalf("no .TH:\n%.200s", out)
	}
	for _, c := range commands() {
		if !c.hidden && (!strings.Contains(out, "\n.SS "+c.name+"\n") || !strings.Contains(out, "Usage: mlbpf "+c.name)) {
			t.Errorf("no section with the help of %s", c.name)
		}
	}
	macros := map[string]bool{".TH": true, ".SH": true, ".SS": true, ".nf": true, ".fi": true, ".B": true, ".I": true, ".TP": true, ".BR": true}
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, ".") && !macros[strings.Fields(line)[0]] {
			t.Errorf("a line roff takes for a request: %q", line)
		}
	}
}
