package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

// runFails runs 'mlbpf run' of the session as a process, which must fail:
// it returns the daemon's stderr after checking it exited with status 1,
// not by a panic.
func (s *session) runFails() string {
	s.t.Helper()
	cmd := mlbpfCommand(s.t, append([]string{"run", "--duration", "5s"}, s.flags...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code, sig := exitStatus(s.t, err)
		if code != 1 || sig != 0 || strings.Contains(stderr.String(), "panic") {
			s.t.Fatalf("mlbpf run over tampered pins: exit status %d (signal %v), want 1\n%s", code, sig, stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Fatalf("mlbpf run over tampered pins still runs after 15s\n%s", stderr.String())
	}
	return stderr.String()
}

// pinForeign pins a map of spec at the model's pin name.
func (s *session) pinForeign(name string, spec *ebpf.MapSpec) {
	s.t.Helper()
	dir := filepath.Join(s.root, "synthetic", "demo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(dir, name))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		s.t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, name)); err != nil {
		s.t.Fatal(err)
	}
}

// pinModel leaves the pins of a synthetic/demo as a stopped daemon would.
func (s *session) pinModel() *synthetic.Objects {
	s.t.Helper()
	sub, err := synthetic.Open(synthetic.Config{PinRoot: s.root, Model: "demo"})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { sub.Close() })
	return sub
}

// TestTamperedPins puts pins of the wrong type or size at a model's path,
// as a stale version or a hand could leave them: the daemon refuses to
// start with an error naming the problem and the fix, exit status 1 and
// no panic; status and mode say what is wrong; rollback clears it and the
// next daemon runs.
func TestTamperedPins(t *testing.T) {
	hash := &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8}
	for _, tc := range []struct {
		name    string
		tamper  func(s *session)
		want    string // in the daemon's error
		control bool   // the control block itself is foreign
	}{
		{"control is a hash", func(s *session) { s.pinForeign("control", hash) }, "does not match this version of mlbpf", true},
		{"control of 16 bytes", func(s *session) {
			s.pinForeign("control", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
		}, "does not match this version of mlbpf", true},
		{"recommend of 4-byte values", func(s *session) {
			s.pinModel().Close()
			s.pinForeign("recommend", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4096})
		}, "does not match this version of mlbpf", false},
		{"link is a map", func(s *session) {
			s.pinModel().Close()
			s.pinForeign(synthetic.LinkPin, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		}, "adopting the live hook's link", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession(t, fmt.Sprintf(sessionConfig, syscallLoad(t)))
			tc.tamper(s)
			stderr := s.runFails()
			if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "mlbpf rollback") {
				t.Fatalf("the daemon's error does not say %q and how to fix it:\n%s", tc.want, stderr)
			}
			if tc.control {
				if _, err := s.cmd("status"); err == nil || !strings.Contains(err.Error(), "synthetic/demo: control map: want an array of 1 x 64 bytes") {
					t.Fatalf("status over a foreign control block: %v", err)
				}
				if _, err := s.cmd("mode", "synthetic/demo", "emergency"); err == nil || !strings.Contains(err.Error(), "control map: want an array") {
					t.Fatalf("mode over a foreign control block: %v", err)
				}
			} else {
				// The daemon never acted: the kernel is on its default
				// and no applier is attached.
				pm := s.pinned()
				if model.State(pm.Control.State) == model.StateRunning {
					t.Fatalf("control block after the failed start: %+v", pm.Control)
				}
				id := testutil.PinnedMapID(t, filepath.Join(s.root, "synthetic", "demo", "control"))
				if n := testutil.LinksUsingMap(t, id); n != 0 {
					t.Fatalf("the applier is attached %d times after the failed start", n)
				}
			}
			s.must("rollback")
			s.start()
			if c := s.control(); c.State != model.StateRunning {
				t.Fatalf("after rollback the daemon runs with %v", c)
			}
		})
	}
}

// TestTamperedControlMode leaves a control block with a mode no version of
// mlbpf writes, RUNNING with a lease far ahead: the kernel takes its
// default, and a daemon starting over it goes to EMERGENCY, sticky until
// an operator sets a mode.
func TestTamperedControlMode(t *testing.T) {
	s := newSession(t, fmt.Sprintf(sessionConfig, syscallLoad(t)))
	sub := s.pinModel()
	raw := loader.Control{Mode: 42, State: uint32(model.StateRunning), LeaseExpiresNs: math.MaxUint64, Generation: 7}
	ctl, err := ebpf.LoadPinnedMap(filepath.Join(sub.Dir(), "control"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if err := ctl.Update(uint32(0), &raw, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if v, err := sub.Apply(5); err != nil || v != 5 {
		t.Fatalf("the applier under mode 42 answered %d (%v), want the default 5", v, err)
	}
	if arms, _ := sub.ArmCounts(); arms[model.ArmFallback] != 1 {
		t.Fatalf("arms %v under mode 42, want one fallback", arms)
	}
	sub.Close()

	s.start()
	s.waitFor("the daemon's first block", func() bool { return s.control().Generation > 7 })
	if c := s.control(); c.Mode != model.ModeEmergency {
		t.Fatalf("the daemon started over mode 42 with %v, want EMERGENCY and the generation continued", c)
	}
	if !strings.Contains(s.logs.String(), "holds a mode that is not one") {
		t.Fatalf("the logs do not say why:\n%s", s.logs)
	}
	// The controller may not leave EMERGENCY: checked on every poll until
	// the kernel has decided again (on its default) and five periods have
	// passed by the daemon's own clock (its lease renewals).
	start := s.pinned()
	a := start.Arms
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b := s.pinned()
		if model.Mode(b.Control.Mode) != model.ModeEmergency {
			t.Fatalf("the daemon left EMERGENCY on its own: %v, arms %v -> %v", pinnedControl(b.Control), a, b.Arms)
		}
		for arm := range loader.ArmCount {
			if model.Arm(arm) != model.ArmFallback && b.Arms[arm] != a[arm] {
				t.Fatalf("%d %v decisions in EMERGENCY", b.Arms[arm]-a[arm], model.Arm(arm))
			}
		}
		if b.Arms[model.ArmFallback] > a[model.ArmFallback] &&
			b.Control.LeaseExpiresNs >= start.Control.LeaseExpiresNs+uint64(5*100*time.Millisecond) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %v, arms %v -> %v: want EMERGENCY renewed five periods on and the kernel's default deciding",
				pinnedControl(b.Control), a, b.Arms)
		}
	}
	s.must("mode", "synthetic/demo", "learning")
	s.waitFor("LEARNING", func() bool {
		pm := s.pinned()
		return model.Mode(pm.Control.Mode) == model.ModeLearning && pm.Arms[model.ArmShadow]+pm.Arms[model.ArmNoRec] > 0
	})
}

// TestTamperedRecommendations writes garbage over every recommendation
// of a model the kernel applies: the applier rejects each (the kernel's
// default answers), counts it, and no decision ever applies a value
// beyond max_value; the daemon runs on.
func TestTamperedRecommendations(t *testing.T) {
	const maxValue = 1000
	s := newSession(t, fmt.Sprintf(`
interval: 100ms
models:
  - name: synthetic/demo
    mode: recommendation
    max_mode: recommendation
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
      max_value: %d
`, syscallLoad(t), maxValue))
	s.start()
	s.waitFor("the model applied", func() bool { return s.pinned().Arms[model.ArmModel] > 0 })
	recs, err := ebpf.LoadPinnedMap(filepath.Join(s.root, "synthetic", "demo", "recommend"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer recs.Close()
	// Garbage over every key in the map, and over every key the learner
	// writes later, until the kernel has rejected one: the keys written
	// first need not be requested again (on a slow machine the load's
	// own start-up, whose system calls happen once, can come after the
	// daemon attached, and be the first keys learned).
	garbage := struct{ Value, Generation uint32 }{math.MaxUint32, math.MaxUint32}
	tampered := map[uint32]bool{}
	tamper := func() {
		var k uint32
		var v struct{ Value, Generation uint32 }
		it := recs.Iterate()
		for it.Next(&k, &v) {
			if tampered[k] {
				continue
			}
			if err := recs.Update(k, &garbage, ebpf.UpdateExist); err != nil {
				t.Fatal(err)
			}
			tampered[k] = true
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterating the recommendations: %v", err)
		}
	}
	rejected := s.pinned().Arms[model.ArmRejected]
	s.waitFor("rejections", func() bool {
		tamper()
		return s.pinned().Arms[model.ArmRejected] > rejected
	})

	ctx := context.Background()
	c, err := agent.Dial(ctx, s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := 0
	for deadline := time.Now().Add(10 * time.Second); seen == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no portion holds a decision on a tampered key after the tampering\n%s", s.kernelView())
		}
		p, err := c.Fetch(ctx, "synthetic/demo", agent.FetchOptions{Raw: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(p.Size) {
			var r synthetic.Record
			if err := synthetic.DecodeRecord(p.Record(i), &r); err != nil {
				t.Fatal(err)
			}
			arm := model.Arm(r.Hdr.Arm)
			if arm == model.ArmModel && r.Applied > maxValue {
				t.Fatalf("the kernel applied %d for key %d, beyond max_value", r.Applied, r.Key)
			}
			// A decision that read the garbage, rather than one made
			// before the tampering reached its key.
			if r.Recommended == garbage.Value && tampered[r.Key] {
				seen++
				if (arm != model.ArmRejected && arm != model.ArmFallback) || r.Applied != r.DefaultValue {
					t.Fatalf("key %d with a garbage recommendation: %v, answered %d (default %d)", r.Key, arm, r.Applied, r.DefaultValue)
				}
			}
		}
	}
	if out := s.must("status"); !strings.Contains(out, "rejected=") {
		t.Fatalf("status does not show the rejections:\n%s", out)
	}
	if st, err := s.status(); err != nil || st[0].State != "RUNNING" || !st[0].Live {
		t.Fatalf("the daemon after the garbage: %+v %v", st, err)
	}
}
