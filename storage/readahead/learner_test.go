package readahead

import "testing"

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
