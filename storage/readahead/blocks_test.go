package readahead

import (
	"testing"

	"github.com/mlbpf/mlbpf/model"
)

// TestHoldoutBalanced: RECOMMENDATION's holdout (50 ‰) is exactly one
// block in every cycle of 20, at a position that varies from cycle to
// cycle; COLLABORATION's split (500 ‰) is one model and one control
// block in every pair, in either order. An i.i.d. draw per block gives
// the shares only on average, and fails.
func TestHoldoutBalanced(t *testing.T) {
	const cycles = 100
	c := model.Control{State: model.StateRunning, Mode: model.ModeRecommendation, LeaseExpiresNs: 1 << 62,
		CollabPermille: 500, HoldoutPermille: 50}
	var p permuted
	positions := map[int]int{}
	for cy := range cycles {
		holdouts := 0
		for i := range 20 {
			switch arm := decide(c, 0, true, &p); arm {
			case model.ArmControl:
				holdouts++
				positions[i]++
			case model.ArmModel:
			default:
				t.Fatalf("cycle %d block %d: arm %v, want MODEL or CONTROL", cy, i, arm)
			}
		}
		if holdouts != 1 {
			t.Errorf("cycle %d: %d holdout blocks of 20, want exactly 1 (50 ‰)", cy, holdouts)
		}
	}
	if p.cycles != cycles {
		t.Errorf("%d cycles counted, want %d", p.cycles, cycles)
	}
	// 100 positions drawn uniformly from 20: fewer than 10 distinct ones
	// has a probability below 1e-20.
	if len(positions) < 10 {
		t.Errorf("the holdout fell at only %d distinct positions in %d cycles (%v): not a randomisation", len(positions), cycles, positions)
	}

	c.Mode = model.ModeCollaboration
	first := 0
	for pair := range 200 {
		a, b := decide(c, 0, true, &p), decide(c, 0, true, &p)
		if a == b || (a != model.ArmModel && a != model.ArmControl) || (b != model.ArmModel && b != model.ArmControl) {
			t.Fatalf("pair %d: %v, %v, want one MODEL and one CONTROL", pair, a, b)
		}
		if a == model.ArmModel {
			first++
		}
	}
	// Binomial(200, 1/2): 6 standard deviations either side.
	if first < 58 || first > 142 {
		t.Errorf("MODEL came first in %d of 200 pairs, want about 100: the order is not random", first)
	}
}

// TestHoldoutCycleRestartsOnModeChange: a cycle begun in one mode does
// not carry into the next (a promotion begins a whole cycle), so the
// share is exact from the promotion on.
func TestHoldoutCycleRestartsOnModeChange(t *testing.T) {
	c := model.Control{State: model.StateRunning, Mode: model.ModeRecommendation, LeaseExpiresNs: 1 << 62,
		CollabPermille: 500, HoldoutPermille: 50}
	for range 50 {
		var p permuted
		c.Mode = model.ModeCollaboration
		decide(c, 0, true, &p)
		c.Mode = model.ModeRecommendation
		holdouts := 0
		for range 20 {
			if decide(c, 0, true, &p) == model.ArmControl {
				holdouts++
			}
		}
		if holdouts != 1 || p.cycles != 2 {
			t.Fatalf("after a promotion: %d holdout blocks in the first 20, %d cycles, want 1 and 2", holdouts, p.cycles)
		}
	}
	if n := cycleLen(333); n != 0 {
		t.Errorf("cycleLen(333) = %d, want 0 (no whole cycle up to %d)", n, MaxCycle)
	}
	var p permuted
	c.HoldoutPermille = 333 // no whole cycle: block by block, each its own
	for range 10 {
		decide(c, 0, true, &p)
	}
	if p.cycles != 10 {
		t.Errorf("333 ‰: %d cycles in 10 blocks, want 10", p.cycles)
	}
}
