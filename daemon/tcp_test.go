package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// TestTCP runs tcp/cc, attached to an empty cgroup of its own, through
// the daemon: lifecycle, the operator handshake on the subsystem's own
// loop, recommendations validated by the subsystem with and without a
// daemon, and rollback.
func TestTCP(t *testing.T) {
	testutil.RequireBPF(t)
	cgroot, err := loader.Cgroup2Root()
	if err != nil {
		testutil.Missing(t, err.Error())
	}
	cg, err := os.MkdirTemp(cgroot, "mlbpf-daemon-test-")
	if err != nil {
		t.Fatalf("creating a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	c := daemonConfig(t, fmt.Sprintf(`
  - name: tcp/cc
    max_mode: collaboration
    lease: 3s
    tcp:
      cgroup: %s
      allowed: [cubic, bbr]
`, cg))
	root := c.PinRoot
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
	if _, err := td.d.Fetch("tcp/cc", nil, true, false); err == nil || !strings.Contains(err.Error(), "no dataset portion published yet") {
		t.Fatalf("fetched a tcp/cc portion from an empty cgroup: %v", err)
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

// tcpTestbed returns a testbed with a cgroup for tcp/cc, and a sink in
// its server namespace.
func tcpTestbed(t *testing.T) (*testbed.Testbed, *testbed.Sink) {
	testutil.RequireBPF(t)
	testutil.RequireCongestionControl(t, "cubic")
	tb, err := testbed.New(t.Context(), testbed.Config{Cgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	sink, err := tb.NewSink(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	return tb, sink
}

// TestTCPDatasets makes connections in tcp/cc's cgroup (a testbed's) and
// fetches their records through the daemon, as an agent or 'mlbpf dataset
// get' does.
func TestTCPDatasets(t *testing.T) {
	tb, sink := tcpTestbed(t)

	c := daemonConfig(t, fmt.Sprintf(`
  - name: tcp/cc
    lease: 5s
    tcp:
      cgroup: %s
      default: cubic
`, tb.Cgroup()))
	td := start(t, c)
	s, _ := td.d.find("tcp/cc")
	waitFor(t, "RUNNING", func() bool { return s.m.State() == model.StateRunning })
	// The period's feedback events carry the transfers' outcomes per arm.
	var mu sync.Mutex
	arms := map[string]int{}
	unsubscribe, err := td.d.Subscribe("tcp/cc", 1, func(ev agent.Event) {
		if ev.Type == agent.EventFeedback && ev.Feedback != nil {
			mu.Lock()
			for arm, f := range ev.Feedback.Arms {
				arms[arm] += f.N
			}
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()

	type conn struct {
		Arm        string `json:"arm"`
		Peer       string `json:"peer"`
		Passive    bool   `json:"passive"`
		BytesAcked uint64 `json:"bytes_acked"`
	}
	// The hub retains the last few portions only: fetch each connection's
	// record before the next one is made, remembering the portions seen.
	var active []conn
	records := 0
	seen := map[uint64]bool{}
	collect := func() {
		for _, off := range s.hub.offsets() {
			if seen[off] {
				continue
			}
			p, err := td.d.Fetch("tcp/cc", &off, true, false)
			if err != nil {
				continue // evicted meanwhile
			}
			if p.RecordKind != loader.RecordTCPConn || p.RecordSize != tcp.RecordSize {
				t.Fatalf("portion of kind %d, %d-byte records", p.RecordKind, p.RecordSize)
			}
			seen[off] = true
			records += len(p.Records)
			for _, raw := range p.Records {
				var c conn
				if err := json.Unmarshal(raw, &c); err != nil {
					t.Fatalf("record %s: %v", raw, err)
				}
				if !c.Passive {
					active = append(active, c)
				}
			}
		}
	}
	const conns = 5
	for i := range conns {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		_, err := tb.Send(ctx, sink.Addr(), testbed.Load{Bytes: 64 << 10}, "")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("connection %d's record published", i+1), func() bool {
			collect()
			return len(active) >= i+1
		})
	}
	if records == 0 {
		t.Fatal("no tcp/cc record fetched")
	}
	for _, c := range active {
		if c.Peer != testbed.ServerAddr.String() {
			t.Errorf("connection to %s: want the sink, %s", c.Peer, testbed.ServerAddr)
		}
		if c.BytesAcked < 64<<10 {
			t.Errorf("connection acked %d bytes: want at least %d", c.BytesAcked, 64<<10)
		}
		if _, err := model.ParseArm(c.Arm); err != nil {
			t.Errorf("arm %q: %v", c.Arm, err)
		}
	}
	waitFor(t, "the transfers' outcomes in the feedback events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, k := range arms {
			n += k
		}
		return n >= conns
	})
	td.shutdown(t)
}

// TestTCPLostCount makes the kernel lose tcp/cc records once: a ring of
// one page, a burst of connections within one period. The portions
// published afterwards must be complete with nothing lost (the loss is
// counted once, in the portions of the period it happened), and the
// status's total must equal the kernel's counter.
func TestTCPLostCount(t *testing.T) {
	tb, sink := tcpTestbed(t)

	const period = 500 * time.Millisecond
	c := daemonConfig(t, fmt.Sprintf(`
  - name: tcp/cc
    interval: %v
    lease: 5s
    tcp:
      cgroup: %s
      default: cubic
      ring_bytes: %d
      learn: {min_bytes: 1}
`, period, tb.Cgroup(), os.Getpagesize()))
	td := start(t, c)
	s, _ := td.d.find("tcp/cc")
	waitFor(t, "RUNNING", func() bool { return s.m.State() == model.StateRunning })
	kernelLost := func() uint64 {
		pm, err := loader.ReadPinned(c.PinRoot, "tcp", "cc")
		if err != nil {
			t.Fatal(err)
		}
		return pm.Lost
	}
	send := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err := tb.Send(ctx, sink.Addr(), testbed.Load{Bytes: 1}, "")
		return err
	}

	// The burst: far more records than a page holds, faster than a
	// period drains them.
	const burst = 256
	errs := make(chan error, burst)
	for range burst {
		go func() { errs <- send() }()
	}
	for range burst {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	lost := kernelLost()
	if lost == 0 {
		t.Fatalf("the kernel lost no record of a burst of %d connections into a %d-byte ring", burst, os.Getpagesize())
	}
	// Let the daemon drain the burst's records and account its loss.
	time.Sleep(3 * period)
	if k := kernelLost(); k != lost {
		t.Fatalf("the kernel's lost counter moved from %d to %d after the burst", lost, k)
	}
	var last uint64
	offs := s.hub.offsets()
	if len(offs) == 0 {
		t.Fatal("no portion published for the burst")
	}
	last = offs[len(offs)-1]

	// After the loss: connections one at a time, each record read before
	// the next; every portion must be complete.
	const after = 3
	checked := map[uint64]bool{}
	records := 0
	for i := range after {
		if err := send(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("connection %d's record published", i+1), func() bool {
			for _, off := range s.hub.offsets() {
				if off <= last || checked[off] {
					continue
				}
				p, err := td.d.Fetch("tcp/cc", &off, false, false)
				if err != nil {
					continue // evicted meanwhile
				}
				checked[off] = true
				records += int(p.Size)
				if p.Lost != 0 || p.State != model.DatasetExtractedCompletely.String() {
					t.Fatalf("portion %d after the loss: %s, %d records, lost %d; want %s, lost 0 (the kernel lost %d, once)",
						off, p.State, p.Size, p.Lost, model.DatasetExtractedCompletely, lost)
				}
			}
			return records >= i+1
		})
	}
	waitFor(t, fmt.Sprintf("status lost = the kernel's %d", lost), func() bool {
		e, _ := s.snapshot()
		return e.Lost == lost
	})
}
