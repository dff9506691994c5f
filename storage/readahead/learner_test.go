package readahead

import (
	"maps"
	"testing"
)

// TestLearnerPrefersTheSmallerOfTiedSettings: a setting that clearly does
// best is chosen; among settings the windows cannot tell apart (a phase
// no setting changes, like random preads) the smallest is.
func TestLearnerPrefersTheSmallerOfTiedSettings(t *testing.T) {
	l := NewLearner(nil)
	const dev = 7
	seq := map[uint32]float64{16: 10, 32: 10, 64: 10, 128: 10, 256: 15, 512: 23, 1024: 28, 2048: 28.5}
	for i := range 2 { // MinWindows: two windows each
		for _, kb := range l.Grid {
			// sequential: larger is better up to 1024 (whose two windows
			// differ a lot); 2048 no better
			noise := float64(i%2) * 0.2
			if kb == 1024 {
				noise = float64(i%2)*12 - 6
			}
			l.Observe(dev, PhaseSequential, kb, seq[kb]+noise)
			// random: every setting the same, give or take noise
			l.Observe(dev, PhaseRandom, kb, 0.38+0.02*float64((i+int(kb))%3))
		}
	}
	if kb, ok := l.Best(dev, PhaseSequential); !ok || kb != 1024 {
		t.Errorf("sequential: best %d (%v), want 1024 (2048 is no better, 512 is 18 %% slower)", kb, ok)
	}
	if kb, ok := l.Best(dev, PhaseRandom); !ok || kb != 16 {
		t.Errorf("random: best %d (%v), want the smallest, 16, when no setting changes the reward", kb, ok)
	}
	if kb, ok := l.Best(dev, PhaseMmap); ok {
		t.Errorf("mmap: best %d with no windows", kb)
	}
}

// TestLearnerPreparesForTheNextPhase: a setting reaches a file when it is
// opened, so the setting in force when a phase ends is the next phase's
// first files'. Random preads (no setting changes them, and their windows
// are noisy) followed by page faults (which want the smallest) get the
// faults' setting, though noise puts 2048 first among their own windows;
// the phases whose windows show the cost keep their own best: sequential
// reads are not slowed for the random preads after them, nor page faults
// for the sequential reads after them.
func TestLearnerPreparesForTheNextPhase(t *testing.T) {
	l := NewLearner(nil)
	const dev = 7
	seq := map[uint32]float64{16: 10.5, 32: 10.5, 64: 10.5, 128: 10.5, 256: 16.5, 512: 23.4, 1024: 28.1, 2048: 27.6}
	mmap := map[uint32]float64{16: 0.36, 32: 0.36, 64: 0.34, 128: 0.31, 256: 0.27, 512: 0.23, 1024: 0.16, 2048: 0.14}
	random := map[uint32]float64{16: 0.36, 32: 0.365, 64: 0.36, 128: 0.37, 256: 0.365, 512: 0.37, 1024: 0.36, 2048: 0.40}
	for i := range 2 {
		sign := float64(2*i - 1) // windows vary by ±10 %
		for _, kb := range l.Grid {
			l.Observe(dev, PhaseSequential, kb, seq[kb]*(1+0.1*sign))
			l.Observe(dev, PhaseRandom, kb, random[kb]*(1+0.1*sign))
			l.Observe(dev, PhaseMmap, kb, mmap[kb]*(1+0.1*sign))
		}
	}
	if kb, _ := l.Best(dev, PhaseRandom); kb != 2048 {
		t.Fatalf("random before any phase followed it: %d, want its own best 2048 (the test's premise)", kb)
	}
	for range 3 { // the cycle: sequential, random, mmap
		l.Follow(dev, PhaseSequential, PhaseRandom)
		l.Follow(dev, PhaseRandom, PhaseMmap)
		l.Follow(dev, PhaseMmap, PhaseSequential)
	}
	want := map[Phase]uint32{PhaseSequential: 1024, PhaseRandom: 16, PhaseMmap: 16}
	for p, kb := range want {
		if got, ok := l.Best(dev, p); !ok || got != kb {
			t.Errorf("%v: %d (%v), want %d", p, got, ok, kb)
		}
		if got, exploring := l.Choose(dev, p, 128, false); got != kb || exploring {
			t.Errorf("%v: Choose gives %d (exploring %v), want %d", p, got, exploring, kb)
		}
	}
	if got := l.Known()[dev]; !maps.Equal(got, want) {
		t.Errorf("Known: %v, want %v", got, want)
	}
	l.Forget(dev)
	if _, ok := l.Best(dev, PhaseRandom); ok {
		t.Error("Forget left a setting")
	}
}
