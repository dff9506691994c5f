package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// TestTCP runs tcp/cc, attached to an empty cgroup of its own, through
// the daemon: lifecycle, the operator handshake on the subsystem's own
// loop, recommendations validated by the subsystem with and without a
// daemon, and rollback.
func TestTCP(t *testing.T) {
	testutil.RequireBPF(t)
	cgroot, err := loader.Cgroup2Root()
	if err != nil {
		t.Skip(err)
	}
	cg, err := os.MkdirTemp(cgroot, "mlbpf-daemon-test-")
	if err != nil {
		t.Fatalf("creating a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	root, dir := testutil.PinRoot(t), t.TempDir()
	c, err := config.Parse("tcp.yaml", []byte(fmt.Sprintf(`
pin_root: %s
state_dir: %s
socket: %s
interval: 100ms
models:
  - name: tcp/cc
    max_mode: collaboration
    lease: 3s
    tcp:
      cgroup: %s
      allowed: [cubic, bbr]
`, root, filepath.Join(dir, "state"), filepath.Join(dir, "run", "agent.sock"), cg)))
	if err != nil {
		t.Fatal(err)
	}
	td := start(t, c)
	control := func() model.Control {
		pm, err := loader.ReadPinned(root, "tcp", "cc")
		if err != nil {
			t.Fatal(err)
		}
		return pinnedControl(pm.Control)
	}
	waitFor(t, "RUNNING", func() bool { return control().State == model.StateRunning })
	s, _ := td.d.find("tcp/cc")

	pinDir := loader.PinDir(root, "tcp", "cc")
	if _, _, err := loader.UpdateControl(pinDir, func(c *model.Control) error { c.Mode = model.ModeEmergency; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EMERGENCY adopted", func() bool { return s.m.Mode() == model.ModeEmergency })
	waitFor(t, "a renewal after EMERGENCY", func() bool {
		k := control()
		return k.Mode == model.ModeEmergency && k.LeaseExpiresNs > loader.MonotonicNs()
	})

	ctx := context.Background()
	rec, err := td.d.Recommend(ctx, agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.0/8", Value: "bbr", Operator: true}, "test")
	if err != nil || rec.Key != "10.0.0.0/8" {
		t.Fatalf("recommend: %+v %v", rec, err)
	}
	if _, err := td.d.Recommend(ctx, agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.1/8", Value: "bbr", Operator: true}, "test"); err == nil || !strings.Contains(err.Error(), "did you mean 10.0.0.0/8") {
		t.Fatalf("host bits set: %v", err)
	}
	if _, err := td.d.Recommend(ctx, agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.0/8", Value: "vegas", Operator: true}, "test"); err == nil {
		t.Fatal("an algorithm the kernel lacks was accepted")
	}
	if _, err := td.d.Fetch("tcp/cc", nil, true, false); err == nil {
		t.Fatal("fetched a tcp/cc portion: the daemon does not publish them")
	}
	td.shutdown(t)
	if k := control(); k.State != model.StateStopped {
		t.Fatalf("after shutdown: %v", k)
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, "tcp", "cc", "tcp-cc.json")); err != nil {
		t.Fatalf("the learner's state was not saved: %v", err)
	}

	// No daemon: the subsystem validates against the configured
	// allow-list.
	if _, err := RecommendPinned(c, root, "tcp/cc", model.Recommendation{Key: "192.168.0.0/16", Value: "cubic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := RecommendPinned(c, root, "tcp/cc", model.Recommendation{Key: "192.168.0.0/16", Value: "reno"}); err == nil || !strings.Contains(err.Error(), "allow-list") {
		t.Fatalf("an algorithm outside the allow-list: %v", err)
	}

	if err := Rollback(root, "tcp/cc"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Fatalf("pins left after rollback: %v", err)
	}
}
