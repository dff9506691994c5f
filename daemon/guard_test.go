package daemon

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// TestGuard drives the daemon's side of the operator handshake step by
// step on a real pinned control map: a store that runs into an operator's
// block is held back and that block becomes the one to adopt; while it is
// adopted only agreeing stores pass; settling makes it the baseline. The
// integration test (TestOperatorHandshake) cannot force the daemon's store
// to come between an operator's write and the daemon's next check, this
// one does.
func TestGuard(t *testing.T) {
	testutil.RequireBPF(t)
	dir := loader.PinDir(testutil.PinRoot(t), "synthetic", "guard")
	coll, err := loader.LoadPinned(&ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
		"control": {Name: "control", Type: ebpf.Array, KeySize: 4, ValueSize: uint32(binary.Size(loader.Control{})), MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE},
	}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ctl, err := loader.NewControlMap(coll.Maps["control"])
	if err != nil {
		t.Fatal(err)
	}
	lock, err := loader.LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	g, err := newGuard(ctl, lock)
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetGuard(lock, g)
	load := func() model.Control {
		t.Helper()
		k, err := ctl.LoadControl()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	// The daemon's own stores pass and renewals are counted.
	daemon := model.Control{State: model.StateRunning, Mode: model.ModeLearning, LeaseExpiresNs: 10}
	for i := range 3 {
		daemon.LeaseExpiresNs += uint64(i + 1)
		if err := ctl.StoreControl(daemon); err != nil {
			t.Fatal(err)
		}
	}
	if renewals, held := g.counters(); renewals != 2 || held != 0 {
		t.Fatalf("after 3 stores: renewals %d held %d, want 2 and 0", renewals, held)
	}
	if p, err := g.check(); err != nil || p != nil {
		t.Fatalf("check with no operator: %v %v", p, err)
	}

	// An operator writes EMERGENCY; the daemon's next renewal runs into it.
	_, op, err := loader.UpdateControl(dir, func(c *model.Control) error { c.Mode = model.ModeEmergency; return nil })
	if err != nil {
		t.Fatal(err)
	}
	renewal := load()
	renewal.Mode, renewal.LeaseExpiresNs = model.ModeLearning, 99
	if err := ctl.StoreControl(renewal); err != nil {
		t.Fatal(err)
	}
	if k := load(); k != op {
		t.Fatalf("kernel %v: the daemon overwrote the operator's %v", k, op)
	}
	if _, held := g.counters(); held != 1 {
		t.Fatalf("held %d, want 1", held)
	}
	p, err := g.check()
	if err != nil || p == nil || *p != op {
		t.Fatalf("check: %v %v, want the operator's %v", p, err, op)
	}

	// While EMERGENCY is adopted, a store that disagrees is still held, one
	// that agrees passes.
	g.begin(classMode{active: true, mode: model.ModeEmergency})
	if err := ctl.StoreControl(renewal); err != nil {
		t.Fatal(err)
	}
	if k := load(); k != op {
		t.Fatalf("kernel %v: a LEARNING store passed during the adoption of %v", k, op)
	}
	agreeing := op
	agreeing.LeaseExpiresNs = 200
	if err := ctl.StoreControl(agreeing); err != nil {
		t.Fatal(err)
	}
	if k := load(); k.Mode != model.ModeEmergency || k.LeaseExpiresNs != 200 {
		t.Fatalf("kernel %v: the agreeing store did not pass", k)
	}
	if _, held := g.counters(); held != 2 {
		t.Fatalf("held %d, want 2", held)
	}

	// Settling makes the kernel's block the baseline: stores pass again and
	// nothing is pending.
	if again, err := g.settle(op); err != nil || again != nil {
		t.Fatalf("settle: %v %v", again, err)
	}
	if p, err := g.check(); err != nil || p != nil {
		t.Fatalf("pending after settle: %v %v", p, err)
	}
	next := load()
	next.LeaseExpiresNs = 300
	if err := ctl.StoreControl(next); err != nil {
		t.Fatal(err)
	}
	if k := load(); k.LeaseExpiresNs != 300 || k.Mode != model.ModeEmergency {
		t.Fatalf("kernel %v after settle", k)
	}

	// A second operator write during an adoption is returned by settle to
	// be adopted in turn.
	g.begin(classMode{active: true, mode: model.ModeEmergency})
	decided := load()
	_, op2, err := loader.UpdateControl(dir, func(c *model.Control) error { c.State = model.StateStopped; return nil })
	if err != nil {
		t.Fatal(err)
	}
	again, err := g.settle(decided)
	if err != nil || again == nil || *again != op2 {
		t.Fatalf("settle after a second operator write: %v %v, want %v", again, err, op2)
	}
}
