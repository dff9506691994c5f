package model

import (
	"errors"
	"fmt"
	"math"
)

// ControllerSnapshot is the evidence a Controller has gathered in its
// current mode, and the significance its promotion tests have spent over
// the model's life, in a form that can be saved (it marshals to JSON) and
// restored into a controller after a restart: a daemon that restarts in
// the same mode continues its tests where it left them instead of
// starting to count afresh, and in any mode it continues the model's
// promotion budget.
type ControllerSnapshot struct {
	// Version is ControllerSnapshotVersion. Snapshots without one (0)
	// were saved before the promotion budget was kept over the model's
	// life, and are refused: what their tests spent is unknown.
	Version int `json:"version"`
	// Mode is the mode the evidence was gathered in.
	Mode Mode `json:"mode"`
	// MinSamples, Confidence and MinEffect are the test parameters the
	// evidence was gathered under: the significance spent on the tests
	// already made depends on them, so evidence is only restored into a
	// controller with the same ones.
	MinSamples int     `json:"min_samples"`
	Confidence float64 `json:"confidence"`
	MinEffect  float64 `json:"min_effect"`
	// Arms holds, per arm (indexed by Arm), the rewards' running sums.
	Arms [ArmCount]RunningStats `json:"arms"`
	// Diff, ShadowReward and ShadowPred are LEARNING's paired comparison:
	// predicted − observed, observed and predicted rewards.
	Diff         RunningStats `json:"diff"`
	ShadowReward RunningStats `json:"shadow_reward"`
	ShadowPred   RunningStats `json:"shadow_pred"`
	Dropped      int          `json:"dropped"`
	// Tests is the number of tests already made in this mode.
	Tests int `json:"tests"`
	// PromotionTests is the number of promotion tests made over the
	// model's life (Evidence.PromotionTests).
	PromotionTests int `json:"promotion_tests"`
	// FleetLooks counts the fleet-designed tests made in this mode;
	// Probation is the mode entered on the fleet's word, if the model is
	// still on probation in it; FleetIgnored why the fleet is ignored for
	// the rest of the model's life (FleetHint).
	FleetLooks   int    `json:"fleet_looks,omitempty"`
	Probation    Mode   `json:"probation,omitempty"`
	FleetIgnored string `json:"fleet_ignored,omitempty"`
	// FleetEffect and FleetStdDev are the hint this mode's
	// fleet-designed tests are designed for (zero before the first).
	FleetEffect float64 `json:"fleet_effect,omitempty"`
	FleetStdDev float64 `json:"fleet_sd,omitempty"`
}

// ControllerSnapshotVersion is the version of the ControllerSnapshot
// format: 2 since it carries PromotionTests.
const ControllerSnapshotVersion = 2

// RunningStats is the state of a running mean and variance (Welford's
// algorithm): the count, the mean and the sum of squared deviations.
type RunningStats struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	M2   float64 `json:"m2"`
}

func (w welford) snapshot() RunningStats { return RunningStats{N: w.n, Mean: w.mean, M2: w.m2} }

func (r RunningStats) check(what string) error {
	if r.N < 0 || !finite(r.Mean) || !finite(r.M2) || r.M2 < 0 || (r.N == 0 && (r.Mean != 0 || r.M2 != 0)) {
		return fmt.Errorf("%s: n=%d mean=%v m2=%v is not a running mean and variance", what, r.N, r.Mean, r.M2)
	}
	return nil
}

// ErrSnapshotMismatch is returned by Restore for a snapshot gathered in
// another mode or under other test parameters: valid, but not evidence for
// this controller.
var ErrSnapshotMismatch = errors.New("controller snapshot does not apply")

// Snapshot returns the evidence gathered in the current mode and the
// promotion tests made over the model's life. Save it in every mode,
// EMERGENCY included: the promotion budget it carries is restored
// whatever the mode. A tripped controller's trip is not part of it: a trip
// is acted on at once.
func (c *Controller) Snapshot() ControllerSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ControllerSnapshot{
		Version: ControllerSnapshotVersion, PromotionTests: c.promotionTests,
		Mode:       c.mode,
		MinSamples: c.cfg.MinSamples, Confidence: c.cfg.Confidence, MinEffect: c.cfg.MinEffect,
		Diff: c.diff.snapshot(), ShadowReward: c.shadowReward.snapshot(), ShadowPred: c.shadowPred.snapshot(),
		Dropped: c.dropped, Tests: c.nextLook,
		FleetLooks: c.fleetLooks, Probation: c.probation, FleetIgnored: c.fleetIgnored,
		FleetEffect: c.design.Effect, FleetStdDev: c.design.StdDev,
	}
	for i := range c.arms {
		s.Arms[i] = c.arms[i].snapshot()
	}
	return s
}

// Restore continues, in a controller for a model in mode, what s saved.
// The promotion tests s counts are always counted (unless the controller
// has counted more): the model's promotion budget survives restarts
// whatever the mode. The evidence of s replaces the controller's only if
// it was gathered in mode and under the same test parameters; otherwise
// Restore returns ErrSnapshotMismatch, saying why, and keeps the
// controller's evidence. Evidence gathered in EMERGENCY or an unknown mode
// is never restored: nothing is decided on it. A snapshot that is
// malformed (an error naming the field) or of another version is refused
// whole, changing nothing.
func (c *Controller) Restore(s ControllerSnapshot, mode Mode) error {
	if s.Version != ControllerSnapshotVersion {
		return fmt.Errorf("controller snapshot version %d, want %d: saved by an mlbpf that restarted its promotion budget in every mode, "+
			"so how much of it was spent is unknown; the evidence is not continued and the budget starts afresh", s.Version, ControllerSnapshotVersion)
	}
	if err := s.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.promotionTests = max(c.promotionTests, s.PromotionTests)
	kept := fmt.Sprintf("%d promotion tests made so far are counted", c.promotionTests)
	// The fleet's standing is the model's life's, like its budget: a
	// probation is continued only in its mode.
	if s.FleetIgnored != "" {
		c.ignoreFleet(s.FleetIgnored)
	}
	switch {
	case s.Probation == ModeUnknown || c.fleetIgnored != "":
	case s.Probation == mode:
		c.probation = mode
	default:
		c.ignoreFleet(fmt.Sprintf("the model left %v, entered on the fleet's word, for %v while stopped", s.Probation, mode))
	}
	switch {
	case s.Mode != mode:
		return fmt.Errorf("%w: gathered in %v, the model is in %v (%s)", ErrSnapshotMismatch, s.Mode, mode, kept)
	case mode == ModeEmergency || !mode.Valid():
		return fmt.Errorf("%w: nothing is decided on evidence in %v (%s)", ErrSnapshotMismatch, mode, kept)
	case s.MinSamples != c.cfg.MinSamples || s.Confidence != c.cfg.Confidence || s.MinEffect != c.cfg.MinEffect:
		return fmt.Errorf("%w: gathered with min_samples %d, confidence %v, min_effect %v; configured now: %d, %v, %v (%s)",
			ErrSnapshotMismatch, s.MinSamples, s.Confidence, s.MinEffect, c.cfg.MinSamples, c.cfg.Confidence, c.cfg.MinEffect, kept)
	}
	for i := range c.arms {
		c.arms[i] = welford{n: s.Arms[i].N, mean: s.Arms[i].Mean, m2: s.Arms[i].M2}
	}
	from := func(r RunningStats) welford { return welford{n: r.N, mean: r.Mean, m2: r.M2} }
	c.diff, c.shadowReward, c.shadowPred = from(s.Diff), from(s.ShadowReward), from(s.ShadowPred)
	c.dropped, c.nextLook, c.mode = s.Dropped, s.Tests, mode
	c.fleetLooks = min(max(s.FleetLooks, 0), 2)
	c.design = FleetHint{Effect: s.FleetEffect, StdDev: s.FleetStdDev}
	return nil
}

func (s ControllerSnapshot) validate() error {
	for i, a := range s.Arms {
		if err := a.check(fmt.Sprintf("arms[%v]", Arm(i))); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		r    RunningStats
	}{{"diff", s.Diff}, {"shadow_reward", s.ShadowReward}, {"shadow_pred", s.ShadowPred}} {
		if err := f.r.check(f.name); err != nil {
			return err
		}
	}
	if s.Diff.N != s.ShadowReward.N || s.Diff.N != s.ShadowPred.N {
		return fmt.Errorf("diff, shadow_reward and shadow_pred count %d, %d and %d outcomes, want the same", s.Diff.N, s.ShadowReward.N, s.ShadowPred.N)
	}
	if s.Diff.N > s.Arms[ArmShadow].N {
		return fmt.Errorf("%d paired shadow outcomes but %d shadow outcomes", s.Diff.N, s.Arms[ArmShadow].N)
	}
	// 40 tests need 2^39 times min_samples outcomes: more is not a count.
	if s.Dropped < 0 || s.Tests < 0 || s.Tests > 40 || s.PromotionTests < 0 {
		return fmt.Errorf("dropped %d, tests %d, promotion_tests %d: want counts (tests at most 40)", s.Dropped, s.Tests, s.PromotionTests)
	}
	if s.Probation != ModeUnknown && !s.Probation.Valid() || len(s.FleetIgnored) > 4096 {
		return fmt.Errorf("probation %v, fleet_ignored of %d bytes: want a mode and a short reason", s.Probation, len(s.FleetIgnored))
	}
	if !finite(s.FleetEffect) || !finite(s.FleetStdDev) || s.FleetEffect < 0 || s.FleetStdDev < 0 {
		return fmt.Errorf("fleet_effect %v, fleet_sd %v: want finite, not negative", s.FleetEffect, s.FleetStdDev)
	}
	if math.IsNaN(s.Confidence) || math.IsNaN(s.MinEffect) {
		return fmt.Errorf("confidence %v, min_effect %v: not numbers", s.Confidence, s.MinEffect)
	}
	return nil
}

// inheritBudget makes c continue the promotion budget of prev, the
// controller it replaces (a re-initialised model keeps its budget), and
// the fleet's standing with it (FleetHint).
func (c *Controller) inheritBudget(prev *Controller) {
	if prev == nil || prev == c {
		return
	}
	prev.mu.Lock()
	n, ignored, probation := prev.promotionTests, prev.fleetIgnored, prev.probation
	prev.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.promotionTests = max(c.promotionTests, n)
	if ignored != "" {
		c.ignoreFleet(ignored)
	} else if probation != ModeUnknown {
		c.probation = probation
	}
}
