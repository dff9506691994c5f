package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp/rto"
	"github.com/mlbpf/mlbpf/testbed"
)

// TestTCPRTOBesideCC runs tcp/rto and tcp/cc through the daemon on one
// cgroup: each its own pins and control block; tcp/rto's recommendations
// validated by its package, applied to new connections (as their records
// say), its records fetched as a dataset; EMERGENCY on one model leaves
// the other alone; rollback of one leaves the other's pins.
func TestTCPRTOBesideCC(t *testing.T) {
	tb, sink := tcpTestbed(t)
	c := daemonConfig(t, fmt.Sprintf(`
  - name: tcp/cc
    lease: 5s
    max_mode: learning
    tcp:
      cgroup: %[1]s
      default: cubic
  - name: tcp/rto
    lease: 5s
    max_mode: recommendation
    mode: collaboration
    collab_permille: 1000
    tcp:
      cgroup: %[1]s
`, tb.Cgroup()))
	root := c.PinRoot
	td := start(t, c)
	rtoSup, err := td.d.find("tcp/rto")
	if err != nil {
		t.Fatal(err)
	}
	ccSup, _ := td.d.find("tcp/cc")
	waitFor(t, "both RUNNING", func() bool {
		return rtoSup.m.State() == model.StateRunning && ccSup.m.State() == model.StateRunning
	})
	if m := rtoSup.m.Mode(); m != model.ModeCollaboration {
		t.Fatalf("tcp/rto starts in %v, want COLLABORATION", m)
	}

	ctx := context.Background()
	want := rto.Setting{SynRtoMs: 20, RtoMinMs: 8}
	rec, err := td.d.Recommend(ctx, agent.Recommendation{Model: "tcp/rto", Key: "198.18.0.0/24", Value: "syn=20ms, rto_min=8ms", Operator: true}, "test")
	if err != nil || rec.Key != "198.18.0.0/24" || rec.Value != want.String() {
		t.Fatalf("recommend: %+v %v", rec, err)
	}
	for _, bad := range []string{"rto_min=2ms", "syn=20ms,bogus=1", "cubic"} {
		if _, err := td.d.Recommend(ctx, agent.Recommendation{Model: "tcp/rto", Key: "198.18.0.0/24", Value: bad, Operator: true}, "test"); err == nil {
			t.Errorf("recommendation %q accepted", bad)
		}
	}

	type flow struct {
		Arm     model.Arm
		Setting rto.Setting
		FCT     time.Duration
		Done    bool
	}
	var flows []flow
	seen := map[uint64]bool{}
	collect := func() {
		for _, off := range rtoSup.hub.offsets() {
			if seen[off] {
				continue
			}
			p, err := td.d.Fetch("tcp/rto", &off, true, false)
			if err != nil {
				continue
			}
			if p.RecordKind != rto.RecordKind || p.RecordSize != rto.RecordSize {
				t.Fatalf("portion of kind %d, %d-byte records", p.RecordKind, p.RecordSize)
			}
			seen[off] = true
			for _, raw := range p.Records {
				var f flow
				if err := json.Unmarshal(raw, &f); err != nil {
					t.Fatalf("record %s: %v", raw, err)
				}
				flows = append(flows, f)
			}
		}
	}
	for i := range 3 {
		sctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		_, err := tb.Send(sctx, sink.Addr(), testbed.Load{Bytes: 64 << 10}, "")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("flow %d's record published", i+1), func() bool {
			collect()
			return len(flows) >= i+1
		})
	}
	for _, f := range flows {
		if f.Arm != model.ArmModel || f.Setting != want || !f.Done || f.FCT <= 0 {
			t.Errorf("flow %+v: want the operator's %s applied (MODEL) and a completion time", f, want)
		}
	}

	if _, _, err := loader.UpdateControl(loader.PinDir(root, "tcp", "rto"), func(c *model.Control) error { c.Mode = model.ModeEmergency; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EMERGENCY adopted by tcp/rto", func() bool { return rtoSup.m.Mode() == model.ModeEmergency })
	if m := ccSup.m.Mode(); m == model.ModeEmergency {
		t.Fatalf("tcp/cc went to %v with tcp/rto", m)
	}
	td.shutdown(t)
	if _, err := os.Stat(filepath.Join(c.StateDir, "tcp", "rto", rto.StateFile)); err != nil {
		t.Fatalf("the learner's state was not saved: %v", err)
	}

	if err := Rollback(root, "tcp/rto"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(loader.PinDir(root, "tcp", "rto")); !os.IsNotExist(err) {
		t.Fatalf("tcp/rto pins left after its rollback: %v", err)
	}
	if _, err := os.Stat(loader.PinDir(root, "tcp", "cc")); err != nil {
		t.Fatalf("tcp/cc's pins went with tcp/rto's rollback: %v", err)
	}
	if _, err := RecommendPinned(c, root, "tcp/rto", model.Recommendation{Key: "10.0.0.0/8", Value: "syn=20ms"}); err == nil || !strings.Contains(err.Error(), "not pinned") {
		t.Fatalf("recommend without pins: %v", err)
	}
}
