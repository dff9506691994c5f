package model

import (
	"fmt"
	"math"
)

// FleetHint is what other hosts (a fleet sharing what it learns) claim of
// the recommendations that stand on this host: ArmModel's mean reward
// exceeds ArmControl's by Effect, one outcome varying by StdDev (both on
// the controller's reward scale). The zero FleetHint is none.
//
// A hint never counts as evidence: the host's own outcomes decide every
// promotion, at the same α budget. The hint only chooses when to look, and
// lets the model enter COLLABORATION on probation:
//
//   - LEARNING → COLLABORATION at once, on the fleet's word (no test, no
//     α spent), when MaxMode allows RECOMMENDATION: the fleet's claim is
//     then tried on the host's own randomised split at once, instead of
//     on LEARNING's counterfactual predictions first.
//   - In COLLABORATION, up to two promotion tests (Welch's, one-sided)
//     designed for the fleet's effect size, when their samples per arm
//     are fewer than MinSamples: the first where a test at the model's
//     next α detects Effect with probability 1/2, the second, if the
//     first fails, where the next test's α detects it with probability
//     FleetPower. Each spends its α from the model's life budget like
//     any promotion test, so the chance of a false promotion stays
//     below 1 − Confidence whatever the fleet claims; a true large effect
//     is proven in a few samples.
//   - Both tests are designed for the hint as it was when the model
//     entered COLLABORATION on probation, or else at the mode's first
//     decision with a hint (pre-registered): a hint that changes
//     afterwards (other hosts' new statistics, or the host's own spread
//     on its default, which its CONTROL outcomes feed) does not move
//     them, so when they are made does not depend on the outcomes.
//   - Probation ends at those tests (each is also due when the
//     MODEL arm has 4 times its samples, if the random split starves the
//     control arm): the model is promoted on its own evidence, or goes
//     back to LEARNING (where it would be without a
//     fleet) and the fleet's hints are ignored for the rest of the
//     model's life (it survives Reset, ReInit and restarts). It also ends
//     back in LEARNING, hints ignored, when the hint is withdrawn before
//     the test (the host's own evidence overruled the claim). So a false
//     claim gets the model applied on at most 4 times the second test's
//     samples per arm, once in the model's life.
type FleetHint struct {
	Effect, StdDev float64
}

// FleetPower is the power the second fleet-designed test aims at against
// the fleet's claimed effect (the first aims at 1/2).
const FleetPower = 0.9

// fleetMinLook is the fewest samples per arm the fleet-designed test
// looks at: Welch's test needs two per arm, and three to have any power
// at the small α of a promotion.
const fleetMinLook = 3

// fleetMaxExposure bounds the MODEL arm's outcomes on probation, in
// multiples of the fleet-designed test's samples per arm.
const fleetMaxExposure = 4

// SetFleetHint sets the fleet's hint (the zero FleetHint clears it); a
// caller sets it afresh before each Decide. A hint that is not finite,
// or claims no improvement, is none.
func (c *Controller) SetFleetHint(h FleetHint) {
	if !finite(h.Effect) || !finite(h.StdDev) || h.Effect <= 0 || h.StdDev < 0 {
		h = FleetHint{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hint = h
}

// FleetIgnored reports whether the fleet's hints are ignored for the rest
// of the model's life, and why.
func (c *Controller) FleetIgnored() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fleetIgnored, c.fleetIgnored != ""
}

// fleetLookAt returns the samples per arm of the next fleet-designed
// test, false when there is none (no hint stands, two tests made, or the
// test would need MinSamples or more: the usual schedule is as fast
// then). The sample count is the smallest n ≥ 3 with
// (t(1−α, n−1) + z(power))·StdDev·√(2/n) below Effect, α the model's
// next promotion test's, power 1/2 for the first test and FleetPower for
// the second, Effect and StdDev the design's (the hint fixed on
// entering the mode; the hint now before it): it depends on the hint
// and the budget, not on the outcomes. The degrees of freedom are the
// fewest Welch's test can have at n per arm (one arm's variance
// dominating, as the default's does on a lossy path, where cubic's log
// goodput varies twice as much as bbr's): with 2n−2, the design of
// equal variances, the test had less power than announced and a true
// claim failed both tests in a quarter of bench-fleet's joins.
func (c *Controller) fleetLookAt() (int, bool) {
	h := c.hint
	if c.fleetIgnored != "" || h.Effect <= 0 || c.fleetLooks >= 2 {
		return 0, false
	}
	if c.design.Effect > 0 {
		h = c.design
	}
	alpha := c.spend(c.promotionTests + 1)
	zPower := 0.0
	if c.fleetLooks == 1 {
		zPower = normalQuantile(FleetPower)
	}
	for n := fleetMinLook; n < c.cfg.MinSamples; n++ {
		need := (studentQuantile(1-alpha, float64(n-1)) + zPower) * h.StdDev * math.Sqrt(2/float64(n))
		if need < h.Effect {
			return n, true
		}
	}
	return 0, false
}

// ignoreFleet ignores the fleet's hints for the rest of the model's life.
func (c *Controller) ignoreFleet(why string) {
	if c.fleetIgnored == "" {
		c.fleetIgnored = why
	}
	c.probation = ModeUnknown
}

// fleetEntry decides LEARNING → COLLABORATION on the fleet's word.
func (c *Controller) fleetEntry(ev *Evidence, maxMode Mode) (Decision, bool) {
	n, ok := c.fleetLookAt()
	if !ok || maxMode < ModeRecommendation {
		return Decision{}, false
	}
	c.probation = ModeCollaboration
	c.design = c.hint // pre-registered: the tests on probation are designed for it
	return Decision{To: ModeCollaboration, Changed: true, Reason: fmt.Sprintf(
		"%s; the fleet claims the model beats the default by %s (sd %s): COLLABORATION on probation, "+
			"its randomised split tested at %d samples per arm, back to LEARNING unless it proves the claim",
		ev.Shadow.shadowSummary(), fmtNum(c.hint.Effect), fmtNum(c.hint.StdDev), n)}, true
}

// fleetSplit makes, in COLLABORATION, the fleet-designed promotion test
// when it is due, and ends probation; ok false when it has nothing to
// decide.
func (c *Controller) fleetSplit(ev *Evidence, sum string, maxMode Mode) (Decision, bool) {
	onProbation := c.probation == ModeCollaboration
	if c.design.Effect <= 0 && c.hint.Effect > 0 {
		c.design = c.hint // pre-registered: the tests of this mode are designed for it
	}
	n, usable := c.fleetLookAt()
	if !usable || maxMode < ModeRecommendation {
		if onProbation && c.fleetLooks > 0 && c.hint.Effect > 0 {
			c.ignoreFleet("the fleet's test was interrupted")
			return Decision{To: ModeLearning, Changed: true, Reason: fmt.Sprintf(
				"%s: the fleet's test was interrupted (a restart, or the claim changed); back to LEARNING, the fleet ignored from now on", sum)}, true
		}
		if onProbation {
			c.ignoreFleet("the fleet's claim was withdrawn on probation")
			return Decision{To: ModeLearning, Changed: true, Reason: fmt.Sprintf(
				"%s: the fleet's claim no longer stands (the host's own evidence overruled it); back to LEARNING, the fleet ignored from now on", sum)}, true
		}
		return Decision{}, false
	}
	seen := min(ev.Split.N, ev.Split.BaselineN)
	// On probation a test is also due when the MODEL arm alone
	// has fleetMaxExposure times its samples (the random split starved
	// the control arm): the claim's exposure is bounded.
	starved := onProbation && ev.Split.N >= fleetMaxExposure*n
	if (seen < n && !starved) || (!onProbation && seen >= c.cfg.MinSamples) {
		return Decision{}, false
	}
	c.fleetLooks++
	alpha := c.promotionAlpha()
	if p := ev.Split.PImprove; p < alpha {
		c.probation = ModeUnknown
		return Decision{To: ModeRecommendation, Changed: true, Reason: fmt.Sprintf(
			"%s, p=%s < α=%s%s, a test designed for the fleet's claimed effect %s: model better than control by more than %s with %s confidence",
			sum, fmtP(p), fmtP(alpha), c.lifeTest(), fmtNum(c.design.Effect), fmtPercent(c.cfg.MinEffect), fmtPercent(c.cfg.Confidence))}, true
	}
	if next, ok := c.fleetLookAt(); ok && maxMode >= ModeRecommendation {
		return Decision{Reason: fmt.Sprintf("%s, p=%s ≥ α=%s%s: the fleet's claimed effect %s not proven yet; its second test at %d samples per arm",
			sum, fmtP(ev.Split.PImprove), fmtP(alpha), c.lifeTest(), fmtNum(c.design.Effect), next)}, true
	}
	c.ignoreFleet(fmt.Sprintf("its claimed effect %s was not borne out by the host's own split (%s)", fmtNum(c.design.Effect), sum))
	if onProbation {
		return Decision{To: ModeLearning, Changed: true, Reason: fmt.Sprintf(
			"%s, p=%s ≥ α=%s%s: the fleet's claimed effect %s not borne out; back to LEARNING, the fleet ignored from now on",
			sum, fmtP(ev.Split.PImprove), fmtP(alpha), c.lifeTest(), fmtNum(c.design.Effect))}, true
	}
	return Decision{Reason: fmt.Sprintf("%s, p=%s ≥ α=%s%s: the fleet's claimed effect %s not borne out, the fleet ignored from now on; %s per arm",
		sum, fmtP(ev.Split.PImprove), fmtP(alpha), c.lifeTest(), fmtNum(c.design.Effect), c.waiting())}, true
}
