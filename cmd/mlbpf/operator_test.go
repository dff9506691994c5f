package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

// armAllowed reports whether the applier may take arm in mode: what
// mlbpf_decide allows, the rejection of an out-of-range value aside.
func armAllowed(arm model.Arm, mode model.Mode) bool {
	switch arm {
	case model.ArmFallback:
		return true // any mode: lease expired, not RUNNING, EMERGENCY
	case model.ArmShadow:
		return mode == model.ModeLearning
	case model.ArmNoRec:
		return mode >= model.ModeLearning && mode <= model.ModeRecommendation
	case model.ArmModel, model.ArmControl:
		return mode == model.ModeCollaboration || mode == model.ModeRecommendation
	}
	return false
}

// TestModeChangesRaceTheController runs many 'mlbpf mode' commands at
// once, from several operators, while the daemon renews the lease and its
// controller promotes a good model on its own. Throughout, the control
// block the kernel reads is always a valid one, its generation never goes
// back, no operator's write is lost (each changed write has a generation
// of its own), and every decision the kernel made is one its mode
// allows; at the end, the last operator's EMERGENCY holds and the daemon
// agrees, and leaving it works.
//
// (This test found the daemon writing, while it adopted one operator's
// block, generations below those of the operators' newer ones, and
// overwriting a block written during the adoption; see
// model.AdoptGeneration and the daemon's guard.)
func TestModeChangesRaceTheController(t *testing.T) {
	s := newSession(t, fmt.Sprintf(`
interval: 100ms
models:
  - name: synthetic/demo
    max_mode: recommendation
    controller:
      min_samples: 20
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
`, syscallLoad(t)))
	s.start()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup

	// The kernel's view: the control block, polled as fast as it goes.
	var blocks atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last loader.Control
		for ctx.Err() == nil {
			pm, err := loader.ReadPinned(s.root, "synthetic", "demo")
			if err != nil {
				t.Error(err)
				return
			}
			c := pm.Control
			if !model.Mode(c.Mode).Valid() || model.State(c.State) < model.StateCreated || model.State(c.State) >= model.StateCount ||
				c.CollabPermille > model.Permille || c.HoldoutPermille > model.Permille {
				t.Errorf("the kernel saw an invalid control block: %+v", c)
				return
			}
			if int32(c.Generation-last.Generation) < 0 {
				t.Errorf("generation went back from %d to %d", last.Generation, c.Generation)
				return
			}
			if c != last {
				blocks.Add(1)
			}
			last = c
		}
	}()

	// The kernel's decisions: every portion the daemon publishes.
	c, err := agent.Dial(ctx, s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "synthetic/demo"); err != nil {
		t.Fatal(err)
	}
	var decisions, portions atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-c.Events():
				if ev.Type != agent.EventDataset || ev.Portion == nil {
					continue
				}
				off := ev.Portion.Offset
				p, err := c.Fetch(ctx, "synthetic/demo", agent.FetchOptions{Offset: &off, Raw: true})
				if err != nil {
					continue // evicted meanwhile, or shutting down
				}
				portions.Add(1)
				for i := range int(p.Size) {
					var r synthetic.Record
					if err := synthetic.DecodeRecord(p.Record(i), &r); err != nil {
						t.Errorf("record %d of portion %d: %v", i, off, err)
						return
					}
					if !armAllowed(model.Arm(r.Hdr.Arm), model.Mode(r.Hdr.Mode)) {
						t.Errorf("the kernel took %v in %v (generation %d)", model.Arm(r.Hdr.Arm), model.Mode(r.Hdr.Mode), r.Hdr.Generation)
						return
					}
					decisions.Add(1)
				}
			}
		}
	}()

	// The operators.
	modes := []string{"emergency", "learning", "collaboration", "recommendation"}
	var mu sync.Mutex
	var results []controlChange
	var ops sync.WaitGroup
	for op := range 6 {
		ops.Add(1)
		go func() {
			defer ops.Done()
			r := rand.New(rand.NewPCG(uint64(op), 7))
			for range 8 {
				var stdout, stderr strings.Builder
				m := modes[r.IntN(len(modes))]
				err := run(ctx, append([]string{"mode", "synthetic/demo", m, "-o", "json"}, s.flags...), &stdout, &stderr)
				if err != nil {
					t.Errorf("mlbpf mode %s: %v\n%s", m, err, stderr.String())
					return
				}
				var ch controlChange
				if err := json.Unmarshal([]byte(stdout.String()), &ch); err != nil {
					t.Errorf("mode -o json: %v", err)
					return
				}
				mu.Lock()
				results = append(results, ch)
				mu.Unlock()
			}
		}()
	}
	ops.Wait()
	gens := map[uint32]bool{}
	changed := 0
	for _, r := range results {
		if !r.Changed {
			continue
		}
		changed++
		if gens[r.After.Generation] {
			t.Fatalf("two writes got generation %d: one overwrote the other", r.After.Generation)
		}
		gens[r.After.Generation] = true
	}

	// The last word: an operator's EMERGENCY, which holds.
	s.must("mode", "synthetic/demo", "emergency")
	s.waitFor("the daemon to agree on EMERGENCY", func() bool {
		st, err := s.status()
		return err == nil && st[0].Mode == "EMERGENCY" && st[0].Daemon != nil && st[0].Daemon.Mode == "EMERGENCY"
	})
	a := s.pinned()
	time.Sleep(500 * time.Millisecond)
	b := s.pinned()
	if model.Mode(b.Control.Mode) != model.ModeEmergency || model.State(b.Control.State) != model.StateRunning {
		t.Fatalf("five periods after the last EMERGENCY the kernel has %v", pinnedControl(b.Control))
	}
	for arm := range loader.ArmCount {
		if model.Arm(arm) != model.ArmFallback && b.Arms[arm] != a.Arms[arm] {
			t.Fatalf("%d %v decisions in EMERGENCY", b.Arms[arm]-a.Arms[arm], model.Arm(arm))
		}
	}
	// Leaving it: LEARNING, from which the controller may promote the
	// model again at once (it is a good one).
	s.must("mode", "synthetic/demo", "learning")
	s.waitFor("the daemon out of EMERGENCY, agreeing with the kernel", func() bool {
		st, err := s.status()
		return err == nil && st[0].Mode != "EMERGENCY" && st[0].Daemon != nil && st[0].Daemon.Mode == st[0].Mode
	})
	time.Sleep(300 * time.Millisecond) // a few more portions for the checker
	cancel()
	wg.Wait()
	t.Logf("%d mode commands, %d changed the block; the kernel saw %d distinct blocks; %d decisions in %d portions checked",
		len(results), changed, blocks.Load(), decisions.Load(), portions.Load())
	if len(results) != 48 || changed == 0 || decisions.Load() == 0 {
		t.Fatalf("%d commands, %d changes, %d decisions checked", len(results), changed, decisions.Load())
	}
	if strings.Contains(s.logs.String(), "model failed") {
		t.Fatalf("the daemon failed:\n%s", s.logs)
	}
}

// TestRollbackDuringLearning rolls back a daemon that is learning: the
// daemon stops, the applier is detached, every pin removed, the learned
// state kept.
func TestRollbackDuringLearning(t *testing.T) {
	s := newSession(t, fmt.Sprintf(learningConfig, syscallLoad(t)))
	s.start()
	s.waitFor("learning", func() bool {
		pm := s.pinned()
		st, err := s.status()
		return model.Mode(pm.Control.Mode) == model.ModeLearning && pm.Arms[model.ArmShadow]+pm.Arms[model.ArmNoRec] > 0 &&
			err == nil && st[0].Daemon != nil && st[0].Daemon.Records > 0
	})
	dir := filepath.Join(s.root, "synthetic", "demo")
	controlID := testutil.PinnedMapID(t, filepath.Join(dir, "control"))
	if n := testutil.LinksUsingMap(t, controlID); n != 1 {
		t.Fatalf("the applier is attached %d times", n)
	}
	s.rollback()
	if n := testutil.LinksUsingMap(t, controlID); n != 0 {
		t.Fatalf("the applier is attached %d times after rollback", n)
	}
	if _, err := os.Stat(filepath.Join(s.root, "synthetic")); !os.IsNotExist(err) {
		t.Fatalf("pins left after rollback (%v)", err)
	}
	if ev, err := daemon.ReadEvidence(s.state, "synthetic/demo"); err != nil || ev == nil || ev.Records == 0 {
		t.Fatalf("the learned state was not kept: %+v %v", ev, err)
	}
}

// TestSIGTERMDuringExport interrupts 'mlbpf dataset export' with SIGTERM
// at many points of its run, and once stops the daemon under it: the file
// is always either the complete export or the file that was there
// before, never a part, no temporary file is left beside it, and the
// daemon shuts down to a consistent state.
func TestSIGTERMDuringExport(t *testing.T) {
	s := newSession(t, fmt.Sprintf(floodConfig, flood(t), 1<<20))
	p := s.spawn()
	s.waitFor("portions", func() bool {
		var portion agent.Portion
		out, err := s.cmd("dataset", "get", "synthetic/demo", "--max-records", "1")
		return err == nil && json.Unmarshal([]byte(out), &portion) == nil && portion.Size > 10000
	})
	outDir := t.TempDir()
	target := filepath.Join(outDir, "demo.jsonl")
	const old = "the export before\n"
	export := func(delay time.Duration, stopDaemon bool) (completed bool) {
		t.Helper()
		if err := os.WriteFile(target, []byte(old), 0o640); err != nil {
			t.Fatal(err)
		}
		cmd := mlbpfCommand(t, append([]string{"dataset", "export", "synthetic/demo", "-o", target}, s.flags...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		if stopDaemon {
			p.signal(syscall.SIGTERM)
		} else {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		code, _ := exitStatus(t, cmd.Wait())
		b, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(target)
		switch {
		case code == 0:
			// Success promises the file holds exactly the rows the
			// command says it wrote. That may be none: a daemon that
			// stopped before the export found it leaves the export the
			// pinned ring, which it has drained (TCG VMs got there).
			rows, ok := exportedRows(stdout.String())
			n, whole := encodeJSONLines(b)
			if rows == 0 && len(b) == 0 {
				n, whole = 0, true
			}
			if !ok || !whole || n != rows || fi.Mode().Perm() != 0o640 {
				t.Fatalf("export after %v reported success (%q): %d JSON lines, complete %v, mode %v", delay, stdout.String(), n, whole, fi.Mode())
			}
		case string(b) != old:
			t.Fatalf("export interrupted after %v (exit %d: %s) left %d bytes in place of the old file", delay, code, stderr.String(), len(b))
		}
		entries, _ := os.ReadDir(outDir)
		if len(entries) != 1 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Fatalf("export after %v left %v", delay, names)
		}
		return code == 0
	}
	var done, interrupted int
	for _, d := range []time.Duration{0, 2, 5, 10, 20, 40, 80, 160, 320} {
		if export(d*time.Millisecond, false) {
			done++
		} else {
			interrupted++
		}
	}
	t.Logf("SIGTERM to the export: %d completed before it, %d interrupted", done, interrupted)
	if interrupted == 0 {
		t.Error("no export was interrupted: the test did not exercise anything")
	}

	// The daemon stopped under an export.
	export(20*time.Millisecond, true)
	if code, sig := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("the daemon's exit status after SIGTERM: %d (%v)\n%s", code, sig, p.logs)
	}
	if pm := s.pinned(); model.State(pm.Control.State) != model.StateStopped || pm.Control.LeaseExpiresNs != 0 {
		t.Fatalf("control block after SIGTERM: %+v", pm.Control)
	}
	for _, f := range []string{"status.json", "daemon.json"} {
		b, err := os.ReadFile(filepath.Join(daemon.ModelStateDir(s.state, "synthetic/demo"), f))
		if os.IsNotExist(err) && f == "daemon.json" {
			continue // written only when an operator stops a model
		}
		var v map[string]any
		if err != nil || json.Unmarshal(b, &v) != nil {
			t.Fatalf("%s after SIGTERM: %v, %q", f, err, b)
		}
	}
	if out := s.must("status"); !strings.Contains(out, "STOPPED") {
		t.Fatalf("status after SIGTERM:\n%s", out)
	}
}

// exportedRows reads the row count from the summary of
// 'mlbpf dataset export' ("…: N rows from M datasets written to FILE (jsonl)").
func exportedRows(out string) (int, bool) {
	m := regexp.MustCompile(`: (\d+) rows from \d+ datasets.* written to `).FindStringSubmatch(out)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}
