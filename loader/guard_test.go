package loader

import (
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
)

// holdGuard admits a store only when the kernel holds what was last
// stored, as the daemon's guard does before it has adopted an operator's
// change.
type holdGuard struct {
	last     model.Control
	held     int
	lastSeen model.Control
}

func (g *holdGuard) Admit(kernel, next model.Control) bool {
	g.lastSeen = kernel
	if kernel != g.last {
		g.held++
		return false
	}
	return true
}

func (g *holdGuard) Stored(c model.Control) { g.last = c }

func TestGuardAndUpdateControl(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	dir := PinDir(root, "sub", "mod")
	coll, err := LoadPinned(controlSpec(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ctl, err := NewControlMap(coll.Maps["control"])
	if err != nil {
		t.Fatal(err)
	}
	lock, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	g := &holdGuard{}
	ctl.SetGuard(lock, g)

	daemon := model.Control{State: model.StateRunning, Mode: model.ModeLearning, Generation: 3}
	if err := ctl.StoreControl(daemon); err != nil {
		t.Fatal(err)
	}
	if got, _ := ctl.LoadControl(); got != daemon {
		t.Fatalf("kernel %v after the daemon's store, want %v", got, daemon)
	}

	// The operator's write, under the same lock.
	before, after, err := UpdateControl(dir, func(c *model.Control) error {
		c.Mode = model.ModeEmergency
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if before != daemon || after.Mode != model.ModeEmergency || after.Generation != 4 {
		t.Fatalf("UpdateControl: before %v after %v", before, after)
	}

	// The daemon's next renewal is held back: the operator's block stays.
	renewal := daemon
	renewal.LeaseExpiresNs = 99
	if err := ctl.StoreControl(renewal); err != nil {
		t.Fatal(err)
	}
	if got, _ := ctl.LoadControl(); got != after {
		t.Fatalf("kernel %v: the daemon overwrote the operator's %v", got, after)
	}
	if g.held != 1 || g.lastSeen != after {
		t.Fatalf("guard held %d, saw %v", g.held, g.lastSeen)
	}

	// An update changing nothing writes nothing.
	_, same, err := UpdateControl(dir, func(*model.Control) error { return nil })
	if err != nil || same != after {
		t.Fatalf("no-op update: %v %v", same, err)
	}
}
