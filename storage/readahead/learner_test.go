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

// TestLearnerClimbsToTheBest: exploring, the learner tries the extremes,
// then climbs from the best through its neighbours until both of the
// best's neighbours are known, and never spends windows on settings far
// from the best; it finds the best of a rise-and-fall response.
func TestLearnerClimbsToTheBest(t *testing.T) {
	for name, c := range map[string]struct {
		reward map[uint32]float64
		want   uint32
		tried  int // at most
	}{
		"sequential": {map[uint32]float64{16: 10.5, 32: 10.5, 64: 10.5, 128: 10.5, 256: 16.5, 512: 23.4, 1024: 28.1, 2048: 27.6}, 1024, 4},
		"mmap":       {map[uint32]float64{16: 0.36, 32: 0.36, 64: 0.34, 128: 0.31, 256: 0.27, 512: 0.23, 1024: 0.16, 2048: 0.14}, 16, 3},
		"middle":     {map[uint32]float64{16: 1, 32: 2, 64: 3, 128: 4, 256: 5, 512: 4, 1024: 3, 2048: 2}, 256, 6},
	} {
		l := NewLearner(nil)
		l.Explore = 0
		tried := map[uint32]bool{}
		for range 100 {
			kb, exploring := l.Choose(1, PhaseSequential, 128, true)
			if !exploring {
				break
			}
			tried[kb] = true
			l.Observe(1, PhaseSequential, kb, c.reward[kb])
		}
		if kb, _ := l.Choose(1, PhaseSequential, 128, true); kb != c.want {
			t.Errorf("%s: chose %d after trying %v, want %d", name, kb, tried, c.want)
		}
		if len(tried) > c.tried {
			t.Errorf("%s: tried %d settings (%v), want at most %d", name, len(tried), tried, c.tried)
		}
	}
}

// TestLearnerFollowsUntriedOnlyWhereNoSettingMatters: a phase whose
// windows never ran under the next phase's setting follows it only if
// none of its own settings measurably differs.
func TestLearnerFollowsUntriedOnlyWhereNoSettingMatters(t *testing.T) {
	l := NewLearner(nil)
	const dev = 3
	for i := range 3 {
		sign := float64(i - 1)
		l.Observe(dev, PhaseMmap, 16, 0.36*(1+0.1*sign))
		l.Observe(dev, PhaseMmap, 2048, 0.14*(1+0.1*sign))
		// random: 128 and 2048 the same, 16 never tried
		l.Observe(dev, PhaseRandom, 128, 0.38*(1+0.1*sign))
		l.Observe(dev, PhaseRandom, 2048, 0.39*(1+0.1*sign))
		// sequential: 128 and 2048 differ, 16 never tried
		l.Observe(dev, PhaseSequential, 128, 10.5*(1+0.1*sign))
		l.Observe(dev, PhaseSequential, 2048, 27.6*(1+0.1*sign))
	}
	for range minFollows {
		l.Follow(dev, PhaseRandom, PhaseMmap)
		l.Follow(dev, PhaseSequential, PhaseMmap)
	}
	if kb, _ := l.Best(dev, PhaseRandom); kb != 16 {
		t.Errorf("random (no setting differs, 16 untried): %d, want the next phase's 16", kb)
	}
	if kb, _ := l.Best(dev, PhaseSequential); kb != 2048 {
		t.Errorf("sequential (2048 beats 128, 16 untried): %d, want its own 2048", kb)
	}
}
