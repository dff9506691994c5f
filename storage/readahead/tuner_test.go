package readahead

import (
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

// TestPhaseBoundaryWindowsAreNobodysOutcome: a window whose phase differs
// from the one before or after it holds the end of one phase and the
// start of the next (here a sequential tail among random preads, 40 times
// their rate); it must reach neither the learner nor the controller, and
// the windows inside a phase must reach both, one window late. The phase
// changes are learned as transitions.
func TestPhaseBoundaryWindowsAreNobodysOutcome(t *testing.T) {
	const dev, kb = 5, 128
	tu := &Tuner{learner: NewLearner(nil), devices: []*device{{Device: Device{Name: "test", Dev: dev}, original: kb, kb: kb}}}
	var now uint64 = uint64(time.Hour)
	window := func(p Phase, mbps float64) *Window {
		now += uint64(250 * time.Millisecond)
		w := &Window{}
		w.Hdr.TsNs, w.WindowNs, w.Dev, w.RaKb = now, uint64(250*time.Millisecond), dev, kb
		w.Hdr.Arm, w.Hdr.Mode = uint8(model.ArmControl), uint8(model.ModeCollaboration)
		w.AskedBytes = uint64(mbps * 1e6 / 4)
		switch p {
		case PhaseSequential:
			w.RqIssued, w.RqSeq, w.Reads = 8, 8, 64
		case PhaseRandom:
			w.RqIssued, w.Reads = 20, 20
		case PhaseMmap:
			w.RqIssued, w.Faults = 20, 20
		}
		return w
	}
	type step struct {
		p    Phase
		mbps float64
	}
	steps := []step{
		{PhaseSequential, 10}, {PhaseSequential, 10}, {PhaseSequential, 10},
		{PhaseRandom, 16}, // the boundary: a sequential tail among preads
		{PhaseRandom, 0.4}, {PhaseRandom, 0.4}, {PhaseRandom, 0.4},
		{PhaseMmap, 0.3}, {PhaseMmap, 0.3}, {PhaseMmap, 0.3},
		{PhaseSequential, 10}, {PhaseSequential, 10},
	}
	var outcomes []float64
	for _, s := range steps {
		w := window(s.p, s.mbps)
		if got := w.Classify(); got != s.p {
			t.Fatalf("window classified %v, want %v (the test's windows)", got, s.p)
		}
		if fb, ok := tu.feedback(w); ok {
			outcomes = append(outcomes, fb.Reward)
		}
	}
	// Judged: the 2nd sequential window (the 1st has none before it, the
	// 3rd is at the boundary), the 2nd and 3rd random ones (the 1st and
	// 4th are at boundaries), the 2nd mmap one; the last sequential ones
	// are at a boundary or wait for their successor.
	for p, want := range map[Phase]int{PhaseSequential: 1, PhaseRandom: 2, PhaseMmap: 1} {
		mean, n := tu.learner.Mean(dev, p, kb)
		if n != want {
			t.Errorf("%v: %d windows learned, want %d (the ones inside the phase)", p, n, want)
		}
		if p == PhaseRandom && mean > 0.5e6 {
			t.Errorf("random: mean %.2f MB/s: the boundary window's sequential tail was learned", mean/1e6)
		}
	}
	if len(outcomes) != 4 {
		t.Errorf("%d outcomes for the controller, want 4 (%v)", len(outcomes), outcomes)
	}
	for _, r := range outcomes {
		if r < 0.9 || r > 1.1 {
			t.Errorf("outcome %.2f relative to the default, want 1 (every window ran under it)", r)
		}
	}
	if next, ok := tu.learner.successor(dev, PhaseRandom); ok {
		t.Errorf("random followed by %v after one cycle, want no successor yet (%d needed)", next, minFollows)
	}
	tu.learner.Follow(dev, PhaseRandom, PhaseMmap)
	if next, ok := tu.learner.successor(dev, PhaseRandom); !ok || next != PhaseMmap {
		t.Errorf("random followed by %v (%v), want mmap", next, ok)
	}
}
