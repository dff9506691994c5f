package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
)

// TestReloadTCPAllowList: tcp/cc's allow-list changes live by a reload,
// its sock_ops program staying attached; a change of its cgroup is
// refused whole, the running allow-list staying. Its keys are listed
// and withdrawn through the daemon.
func TestReloadTCPAllowList(t *testing.T) {
	testutil.RequireBPF(t)
	cgroot, err := loader.Cgroup2Root()
	if err != nil {
		testutil.Missing(t, err.Error())
	}
	cg, err := os.MkdirTemp(cgroot, "mlbpf-reload-test-")
	if err != nil {
		t.Fatalf("creating a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	const models = `
  - name: tcp/cc
    lease: 3s
    tcp:
      cgroup: %s
      allowed: [%s]
`
	c := daemonConfig(t, fmt.Sprintf(models, cg, "cubic, reno"))
	next := c
	td := start(t, c)
	td.d.reread = func() (*config.Config, error) { return next, nil } // before any reload
	ctx := context.Background()
	reno := agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.0/8", Value: "reno", Operator: true}
	if _, err := td.d.Recommend(ctx, reno, "test"); err != nil {
		t.Fatalf("reno, allowed: %v", err)
	}
	again := func(allowed, cgroup string) *config.Config {
		y := fmt.Sprintf("pin_root: %s\nstate_dir: %s\nsocket: %s\ninterval: 100ms\nmodels:"+models, c.PinRoot, c.StateDir, c.Socket, cgroup, allowed)
		n, err := config.Parse("reloaded.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	next = again("cubic", cg)
	res, err := td.d.Reload(ctx, "test")
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if len(res.Changes) != 1 || !strings.Contains(res.Changes[0], "tcp: section, applied live") {
		t.Errorf("changes: %q", res.Changes)
	}
	if _, err := td.d.Recommend(ctx, reno, "test"); err == nil || !strings.Contains(err.Error(), "not in the allow-list") {
		t.Fatalf("reno after the reload (%v): %v", res.Changes, err)
	}
	if _, err := os.Stat(loader.PinDir(c.PinRoot, "tcp", "cc") + "/link"); err != nil {
		t.Errorf("the sock_ops link after the reload: %v", err)
	}
	next = again("cubic, reno", "/sys/fs/cgroup/elsewhere")
	if _, err := td.d.Reload(ctx, "test"); !errors.Is(err, ErrReloadRefused) || !strings.Contains(err.Error(), "cgroup") {
		t.Fatalf("a cgroup change: %v", err)
	}
	if _, err := td.d.Recommend(ctx, reno, "test"); err == nil {
		t.Fatal("a refused reload changed the allow-list")
	}

	// tcp/cc's keys: listed, withdrawn (an address is its /32).
	es, err := td.d.Recommendations("tcp/cc")
	if err != nil || len(es) != 1 || es[0].Key != "10.0.0.0/8" || es[0].Value != "reno" || es[0].By != "operator" || es[0].Written == "" {
		t.Fatalf("recommendations: %+v %v", es, err)
	}
	if _, err := td.d.Withdraw(ctx, agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.1/8"}, "test"); err == nil || !strings.Contains(err.Error(), "did you mean") {
		t.Fatalf("withdrawing a malformed prefix: %v", err)
	}
	if w, err := td.d.Withdraw(ctx, agent.Recommendation{Model: "tcp/cc", Key: "10.0.0.0/8"}, "test"); err != nil || w.Key != "10.0.0.0/8" {
		t.Fatalf("withdraw: %+v %v", w, err)
	}
	if es, _ := td.d.Recommendations("tcp/cc"); len(es) != 0 {
		t.Fatalf("after the withdrawal: %+v", es)
	}
}
