package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
)

// The Go enums of package model must equal the C enums of mlbpf.h, which
// bpf2go generated into abi_bpfel.go.
func TestEnumsMatchHeader(t *testing.T) {
	modes := map[model.Mode]abiMlbpfMode{
		model.ModeUnknown:        abiMlbpfModeMLBPF_MODE_UNKNOWN,
		model.ModeEmergency:      abiMlbpfModeMLBPF_MODE_EMERGENCY,
		model.ModeLearning:       abiMlbpfModeMLBPF_MODE_LEARNING,
		model.ModeCollaboration:  abiMlbpfModeMLBPF_MODE_COLLABORATION,
		model.ModeRecommendation: abiMlbpfModeMLBPF_MODE_RECOMMENDATION,
	}
	for g, c := range modes {
		if uint32(g) != uint32(c) {
			t.Errorf("mode %v = %d in Go, %d in mlbpf.h", g, g, c)
		}
	}
	states := map[model.State]abiMlbpfModelState{
		model.StateUnknown:      abiMlbpfModelStateMLBPF_MODEL_UNKNOWN,
		model.StateCreated:      abiMlbpfModelStateMLBPF_MODEL_CREATED,
		model.StateInitialized:  abiMlbpfModelStateMLBPF_MODEL_INITIALIZED,
		model.StateStarted:      abiMlbpfModelStateMLBPF_MODEL_STARTED,
		model.StateRunning:      abiMlbpfModelStateMLBPF_MODEL_RUNNING,
		model.StateStopped:      abiMlbpfModelStateMLBPF_MODEL_STOPPED,
		model.StateShuttingDown: abiMlbpfModelStateMLBPF_MODEL_SHUTTING_DOWN,
	}
	for g, c := range states {
		if uint32(g) != uint32(c) {
			t.Errorf("state %v = %d in Go, %d in mlbpf.h", g, g, c)
		}
	}
	arms := map[model.Arm]abiMlbpfArm{
		model.ArmFallback: abiMlbpfArmMLBPF_ARM_FALLBACK,
		model.ArmNoRec:    abiMlbpfArmMLBPF_ARM_NO_REC,
		model.ArmShadow:   abiMlbpfArmMLBPF_ARM_SHADOW,
		model.ArmControl:  abiMlbpfArmMLBPF_ARM_CONTROL,
		model.ArmModel:    abiMlbpfArmMLBPF_ARM_MODEL,
		model.ArmRejected: abiMlbpfArmMLBPF_ARM_REJECTED,
		model.ArmSkipped:  abiMlbpfArmMLBPF_ARM_SKIPPED,
	}
	for g, c := range arms {
		if uint32(g) != uint32(c) {
			t.Errorf("arm %v = %d in Go, %d in mlbpf.h", g, g, c)
		}
	}
	if int(model.ArmCount) != ArmCount {
		t.Errorf("model.ArmCount %d, MLBPF_ARM_MAX %d", model.ArmCount, ArmCount)
	}
	if n := int(unsafe.Sizeof(Control{})); n != controlSize {
		t.Errorf("sizeof(struct mlbpf_control) = %d, controlSize %d", n, controlSize)
	}
	if n := int(unsafe.Sizeof(RecordHeader{})); n != RecordHeaderSize {
		t.Errorf("sizeof(struct mlbpf_record_hdr) = %d, RecordHeaderSize %d", n, RecordHeaderSize)
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"tcp", "cc", "a", "rto-v2", "x_1"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "TCP", "1cc", "../etc", "a/b", "a b", strings.Repeat("a", 33)} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}

func controlSpec() *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{
		"control": {Name: "control", Type: ebpf.Array, KeySize: 4, ValueSize: uint32(controlSize), MaxEntries: 1, Flags: unix.BPF_F_MMAPABLE},
		"stats":   {Name: "stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(ArmCount)},
	}}
}

func TestLoadPinnedAdoptsAndRemoves(t *testing.T) {
	testutil.RequireBPF(t)
	dir := PinDir(testutil.PinRoot(t), "sub", "mod")

	c1, err := LoadPinned(controlSpec(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := NewControlMap(c1.Maps["control"])
	if err != nil {
		t.Fatal(err)
	}
	want := model.Control{Mode: model.ModeLearning, State: model.StateRunning, LeaseExpiresNs: 99, CollabPermille: 500, HoldoutPermille: 50, Generation: 3}
	if err := ctl.StoreControl(want); err != nil {
		t.Fatal(err)
	}
	c1.Close()

	c2, err := LoadPinned(controlSpec(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctl2, err := NewControlMap(c2.Maps["control"])
	if err != nil {
		t.Fatal(err)
	}
	got, err := ctl2.LoadControl()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("adopted control %+v, want %+v", got, want)
	}
	c2.Close()

	if err := RemovePins(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists after RemovePins: %v", dir, err)
	}
	if err := RemovePins(dir); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

// A pin of the wrong shape where the control block belongs is refused
// with an error that says how to clear it, and left in place.
func TestLoadPinnedRefusesForeignPin(t *testing.T) {
	testutil.RequireBPF(t)
	dir := PinDir(testutil.PinRoot(t), "sub", "mod")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	foreign, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if err := foreign.Pin(filepath.Join(dir, "control")); err != nil {
		t.Fatal(err)
	}
	_, err = LoadPinned(controlSpec(), dir)
	if !errors.Is(err, ebpf.ErrMapIncompatible) || !strings.Contains(err.Error(), "mlbpf rollback") {
		t.Fatalf("loading over a foreign pin: %v, want ErrMapIncompatible with advice", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "control")); err != nil {
		t.Fatalf("foreign pin removed: %v", err)
	}

	if _, err := NewControlMap(foreign); err == nil {
		t.Fatal("NewControlMap accepted a hash map")
	}
}

func TestReadPinned(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	spec := controlSpec()
	spec.Maps["lost"] = &ebpf.MapSpec{Name: "lost", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1}
	coll, err := LoadPinned(spec, PinDir(root, "sub", "mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ctl, _ := NewControlMap(coll.Maps["control"])
	if err := ctl.StoreControl(model.Control{Mode: model.ModeCollaboration, State: model.StateStopped}); err != nil {
		t.Fatal(err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	perCPU := make([]uint64, ncpu)
	perCPU[0] = 5
	if ncpu > 1 {
		perCPU[1] = 2
	}
	if err := coll.Maps["stats"].Update(uint32(model.ArmModel), perCPU, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}

	list, err := ListPinned(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Subsystem != "sub" || list[0].Model != "mod" {
		t.Fatalf("ListPinned: %+v", list)
	}
	wantModel := uint64(5)
	if ncpu > 1 {
		wantModel = 7
	}
	if got := list[0].Arms[model.ArmModel]; got != wantModel {
		t.Fatalf("model arm count %d, want %d (summed over CPUs)", got, wantModel)
	}
	if model.Mode(list[0].Control.Mode) != model.ModeCollaboration {
		t.Fatalf("control %+v", list[0].Control)
	}

	// A model directory whose control block is not pinned yet (a daemon
	// creating it) is named as such, with what to do.
	if err := os.MkdirAll(PinDir(root, "sub", "starting"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPinned(root, "sub", "starting"); err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "try again") {
		t.Fatalf("ReadPinned of a model being created: %v", err)
	}
}

// TestLoadPinnedConcurrently loads one model's maps from several loaders
// at once, as a daemon starting up and an operator's command with no
// daemon to talk to yet ('mlbpf recommend') do: each must succeed, and
// all must end up on the same maps, whoever pinned each first.
func TestLoadPinnedConcurrently(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	spec := controlSpec()
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		spec.Maps[name] = &ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 16}
	}
	const loaders = 4
	for round := range 50 {
		dir := PinDir(root, "sub", fmt.Sprintf("m%d", round))
		start := make(chan struct{})
		type result struct {
			ids map[string]ebpf.MapID
			err error
		}
		results := make(chan result, loaders)
		for range loaders {
			go func() {
				<-start
				coll, err := LoadPinned(spec, dir)
				if err != nil {
					results <- result{err: err}
					return
				}
				defer coll.Close()
				ids := map[string]ebpf.MapID{}
				for name, m := range coll.Maps {
					info, err := m.Info()
					if err != nil {
						results <- result{err: err}
						return
					}
					ids[name], _ = info.ID()
				}
				results <- result{ids: ids}
			}()
		}
		close(start)
		var first map[string]ebpf.MapID
		for range loaders {
			r := <-results
			if r.err != nil {
				t.Fatalf("round %d: a loader racing %d others failed: %v", round, loaders-1, r.err)
			}
			if first == nil {
				first = r.ids
				continue
			}
			for name, id := range r.ids {
				if first[name] != id {
					t.Fatalf("round %d: map %s is %d in one loader, %d in another: want one map, pinned once", round, name, first[name], id)
				}
			}
		}
		if err := RemovePins(dir); err != nil {
			t.Fatal(err)
		}
	}
}
