package model

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ControllerConfig configures the mode controller.
type ControllerConfig struct {
	// MinSamples is the number of outcomes per compared arm before any
	// test; the tests run again each time it doubles. Default 30.
	MinSamples int
	// Confidence is the one-sided confidence a promotion needs over all
	// the promotion tests made in the model's life, and a demotion over
	// all the demotion tests made since the mode was entered. Default
	// 0.99.
	Confidence float64
	// MinEffect is the relative improvement a promotion needs: 0.02
	// means the model must beat the default by more than 2 % of the
	// default's mean reward. Zero means any significant improvement.
	MinEffect float64
	// MaxMode caps promotion. Default ModeRecommendation.
	MaxMode Mode
}

// DefaultControllerConfig returns the defaults: 30 samples, 99 %
// confidence, 2 % minimum effect, up to RECOMMENDATION.
func DefaultControllerConfig() ControllerConfig {
	return ControllerConfig{MinSamples: 30, Confidence: 0.99, MinEffect: 0.02, MaxMode: ModeRecommendation}
}

// withDefaults fills zero MinSamples, Confidence and MaxMode (MinEffect
// zero is meaningful).
func (c ControllerConfig) withDefaults() ControllerConfig {
	d := DefaultControllerConfig()
	if c.MinSamples == 0 {
		c.MinSamples = d.MinSamples
	}
	if c.Confidence == 0 {
		c.Confidence = d.Confidence
	}
	if c.MaxMode == ModeUnknown {
		c.MaxMode = d.MaxMode
	}
	return c
}

// Validate reports what is wrong with c; zero fields are fine (defaults).
func (c ControllerConfig) Validate() error {
	if probs := c.problems(""); len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(probs, "; "))
	}
	return nil
}

func (c ControllerConfig) problems(prefix string) []string {
	var probs []string
	if c.MinSamples < 0 || c.MinSamples == 1 {
		probs = append(probs, fmt.Sprintf("%sMinSamples is %d, want at least 2", prefix, c.MinSamples))
	}
	if c.Confidence != 0 && !(c.Confidence >= 0.5 && c.Confidence < 1) {
		probs = append(probs, fmt.Sprintf("%sConfidence is %v, want 0.5 to 1 (exclusive), e.g. 0.99", prefix, c.Confidence))
	}
	if !(c.MinEffect >= 0) || math.IsInf(c.MinEffect, 0) {
		probs = append(probs, fmt.Sprintf("%sMinEffect is %v, want ≥ 0, e.g. 0.02", prefix, c.MinEffect))
	}
	if c.MaxMode != ModeUnknown && !c.MaxMode.Valid() {
		probs = append(probs, fmt.Sprintf("%sMaxMode is %v, want EMERGENCY, LEARNING, COLLABORATION or RECOMMENDATION", prefix, c.MaxMode))
	}
	return probs
}

// Outcome is one observed outcome of an applier decision.
type Outcome struct {
	Arm    Arm
	Reward float64 // larger is better
	// Predicted is the learner's predicted reward of its recommendation,
	// meaningful when HasPrediction: for ArmShadow outcomes, what the
	// recommendation would have achieved.
	Predicted     float64
	HasPrediction bool
}

// ArmStats summarizes the rewards of one arm.
type ArmStats struct {
	N        int
	Mean     float64
	Variance float64 // sample variance; 0 when N < 2
}

// StdErr returns the standard error of the mean.
func (s ArmStats) StdErr() float64 {
	if s.N < 2 {
		return 0
	}
	return math.Sqrt(s.Variance / float64(s.N))
}

// Comparison compares a treatment with a baseline: ArmModel with
// ArmControl (Welch), or the learner's predictions with the rewards
// observed under the default (paired).
type Comparison struct {
	N, BaselineN       int     // samples of each side (equal when paired)
	Mean, BaselineMean float64 // mean reward of each side
	Effect             float64 // estimated improvement, treatment − baseline
	Margin             float64 // improvement a promotion needs: MinEffect·|BaselineMean|
	StdErr             float64 // standard error of Effect
	// DF is the degrees of freedom of the Student t distribution the
	// comparison uses: N − 1 paired, Welch–Satterthwaite's for two arms.
	DF float64
	// Lower and Upper bound Effect with the configured confidence
	// (two-sided).
	Lower, Upper float64
	// PImprove is the one-sided p-value against "Effect ≤ Margin",
	// PRegress the one against "Effect ≥ 0" (Student t). Both are 1 with
	// fewer than two samples a side.
	PImprove, PRegress float64
}

// Evidence is what the controller has gathered in the current mode.
type Evidence struct {
	// Mode is the mode the evidence was gathered in, as last given to
	// Decide.
	Mode Mode
	// Arms summarizes the rewards per arm.
	Arms [ArmCount]ArmStats
	// Shadow is LEARNING's counterfactual comparison: the predicted reward
	// of the recommendation against the reward observed under the
	// default, over the ArmShadow outcomes with a prediction.
	Shadow Comparison
	// Split is the randomised comparison of ArmModel with ArmControl.
	Split Comparison
	// Dropped counts outcomes ignored: unknown arm, reward not finite.
	Dropped int
	// NextTest is the number of samples (per compared arm) at which the
	// next test runs.
	NextTest int
	// Tripped is the reason the controller was tripped to EMERGENCY, if
	// it was.
	Tripped string
	// PromotionTests is the number of promotion tests made over the
	// model's life, in every mode and across restarts: the next one runs
	// at α·6/(π²(PromotionTests+1)²).
	PromotionTests int
}

// Decision is the controller's verdict on the mode.
type Decision struct {
	From, To Mode
	Changed  bool
	Reason   string
	Evidence Evidence
}

// String returns "COLLABORATION → RECOMMENDATION: reason", or
// "COLLABORATION: reason" when nothing changes.
func (d Decision) String() string {
	if d.Changed {
		return fmt.Sprintf("%v → %v: %s", d.From, d.To, d.Reason)
	}
	return fmt.Sprintf("%v: %s", d.From, d.Reason)
}

// Controller is the mode controller (the RFC's estimate_system_state and
// correct_system_state): it gathers outcomes in the current mode and
// decides whether the evidence warrants a promotion or a demotion.
//
//   - LEARNING → COLLABORATION when the shadow outcomes show, paired, that
//     the learner's predicted reward beats the reward observed under the
//     default by more than MinEffect.
//   - COLLABORATION → RECOMMENDATION when ArmModel beats ArmControl by
//     more than MinEffect (Welch test).
//   - RECOMMENDATION → COLLABORATION → LEARNING when ArmModel is
//     significantly worse than ArmControl.
//   - Never above MaxMode. EMERGENCY is never left by a decision, only by
//     an operator; Trip makes the next decision EMERGENCY.
//   - With a fleet's hint (SetFleetHint), LEARNING → COLLABORATION on the
//     fleet's word, on probation, and up to two promotion tests designed
//     (pre-registered) for the fleet's claimed effect, from the same
//     budget (see FleetHint).
//
// Evidence is reset whenever the mode changes. Tests run when the number
// of samples reaches MinSamples, then each time it doubles. They are
// Student t tests (Welch's for two arms), valid at the small sample
// counts of a first look, where the normal's quantiles are too small.
// Significance α = 1 − Confidence is spent in two budgets:
//
//   - Promotions: the j-th promotion test of the model's life uses
//     α·6/(π²j²). The count j survives mode changes, Reset, trips,
//     re-initialisation (Model.ReInit) and restarts (Snapshot, Restore),
//     so the chance that a model no better than the default is ever
//     promoted stays below 1 − Confidence however often it is promoted,
//     demoted or sent to EMERGENCY and back, and however long it runs.
//   - Demotions: the k-th demotion test since the mode was entered uses
//     α·6/(π²k²). This budget restarts with each mode, so that a harmful
//     model is demoted as fast after its tenth promotion as after its
//     first; a needless demotion only gives the kernel its default back.
//
// A Controller is safe for concurrent use.
type Controller struct {
	mu           sync.Mutex
	cfg          ControllerConfig
	mode         Mode
	arms         [ArmCount]welford
	diff         welford // Predicted − Reward of shadow outcomes
	shadowReward welford
	shadowPred   welford
	dropped      int
	nextLook     int // index of the next test in this mode
	tripped      string
	// promotionTests counts the promotion tests of the model's life:
	// never reset (see Controller).
	promotionTests int
	// The fleet (FleetHint): the hint set last; the fleet-designed
	// tests made in this mode; the hint they are designed for, fixed on
	// entering the mode on probation or else at the mode's first fleet
	// decision (zero before); the mode entered on the
	// fleet's word, ModeUnknown when none; why the fleet is ignored for
	// the rest of the model's life ("" while it is not). Only the hint,
	// fleetLooks and design are reset.
	hint         FleetHint
	fleetLooks   int
	design       FleetHint
	probation    Mode
	fleetIgnored string
}

// NewController returns a controller. The zero ControllerConfig means
// DefaultControllerConfig; otherwise zero MinSamples, Confidence and
// MaxMode take their defaults. It panics if cfg fails Validate.
func NewController(cfg ControllerConfig) *Controller {
	if err := cfg.Validate(); err != nil {
		panic("model.NewController: " + err.Error())
	}
	if cfg == (ControllerConfig{}) {
		cfg = DefaultControllerConfig()
	}
	return &Controller{cfg: cfg.withDefaults()}
}

// Config returns the configuration in effect.
func (c *Controller) Config() ControllerConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Observe adds one outcome. Outcomes with an unknown arm or a reward
// that is not finite are dropped (and counted).
func (c *Controller) Observe(o Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o.Arm >= ArmCount || !finite(o.Reward) {
		c.dropped++
		return
	}
	c.arms[o.Arm].add(o.Reward)
	if o.Arm == ArmShadow && o.HasPrediction && finite(o.Predicted) {
		c.diff.add(o.Predicted - o.Reward)
		c.shadowReward.add(o.Reward)
		c.shadowPred.add(o.Predicted)
	}
}

// Reset forgets all evidence and clears a trip, but keeps the promotion
// tests made (the model's promotion budget); the next Decide adopts its
// mode without discarding what was observed meanwhile.
func (c *Controller) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetEvidence()
	c.tripped = ""
	c.mode = ModeUnknown
}

func (c *Controller) resetEvidence() {
	c.arms = [ArmCount]welford{}
	c.diff, c.shadowReward, c.shadowPred = welford{}, welford{}, welford{}
	c.dropped, c.nextLook = 0, 0
	c.fleetLooks = 0
	if c.probation == ModeUnknown {
		c.design = FleetHint{} // on probation, it was fixed on entering the mode
	}
}

// Trip makes the next Decide return EMERGENCY with reason (unless the mode
// already is EMERGENCY). The first reason is kept until the trip is
// cleared by Reset or by a Decide in EMERGENCY.
func (c *Controller) Trip(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tripped == "" {
		c.tripped = reason
	}
}

// TripLeaseLost trips the controller because the lease expired at
// expiredNs and was noticed at nowNs (CLOCK_MONOTONIC): the agent was dead
// or stuck, and the kernel ran its default meanwhile.
func (c *Controller) TripLeaseLost(expiredNs, nowNs uint64) {
	lapse := time.Duration(0)
	if nowNs > expiredNs {
		lapse = time.Duration(min(nowNs-expiredNs, math.MaxInt64))
	}
	c.Trip(fmt.Sprintf("lease lost: expired %v before renewal, the agent was dead or stuck", lapse))
}

// TripCorrupted trips the controller because of corrupted data.
func (c *Controller) TripCorrupted(err error) {
	c.Trip("corrupted data: " + err.Error())
}

// TripOperator trips the controller on an operator's command.
func (c *Controller) TripOperator(reason string) {
	c.Trip("operator command: " + reason)
}

// Tripped returns the trip reason, if the controller is tripped.
func (c *Controller) Tripped() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tripped, c.tripped != ""
}

// Evidence returns the evidence gathered so far.
func (c *Controller) Evidence() Evidence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evidence()
}

func (c *Controller) evidence() Evidence {
	ev := Evidence{Mode: c.mode, Dropped: c.dropped, Tripped: c.tripped, NextTest: c.cfg.MinSamples << c.nextLook,
		PromotionTests: c.promotionTests}
	for i := range c.arms {
		ev.Arms[i] = c.arms[i].stats()
	}
	d, r, p := c.diff.stats(), c.shadowReward.stats(), c.shadowPred.stats()
	ev.Shadow = c.compare(Comparison{
		N: d.N, BaselineN: d.N, Mean: p.Mean, BaselineMean: r.Mean,
		Effect: d.Mean, StdErr: d.StdErr(), DF: float64(max(d.N-1, 0)),
	})
	m, k := ev.Arms[ArmModel], ev.Arms[ArmControl]
	ev.Split = c.compare(Comparison{
		N: m.N, BaselineN: k.N, Mean: m.Mean, BaselineMean: k.Mean,
		Effect: m.Mean - k.Mean, StdErr: welchStdErr(m, k), DF: welchDF(m, k),
	})
	return ev
}

// compare completes a comparison with its margin, interval and p-values.
func (c *Controller) compare(cmp Comparison) Comparison {
	cmp.Margin = c.cfg.MinEffect * math.Abs(cmp.BaselineMean)
	cmp.Lower, cmp.Upper = cmp.Effect, cmp.Effect
	switch {
	case cmp.N < 2 || cmp.BaselineN < 2:
		cmp.PImprove, cmp.PRegress = 1, 1
	case cmp.StdErr == 0:
		cmp.PImprove, cmp.PRegress = 1, 1
		if cmp.Effect > cmp.Margin {
			cmp.PImprove = 0
		}
		if cmp.Effect < 0 {
			cmp.PRegress = 0
		}
	default:
		cmp.PImprove = studentUpperTail((cmp.Effect-cmp.Margin)/cmp.StdErr, cmp.DF)
		cmp.PRegress = studentUpperTail(-cmp.Effect/cmp.StdErr, cmp.DF)
		half := studentQuantile(1-(1-c.cfg.Confidence)/2, cmp.DF) * cmp.StdErr
		cmp.Lower, cmp.Upper = cmp.Effect-half, cmp.Effect+half
	}
	return cmp
}

// Decide returns the controller's decision for a model in mode current.
// When the decision changes the mode, the evidence is reset for the new
// mode; evidence is also reset when current differs from the mode of the
// previous Decide (or of the decision it returned), since it was gathered
// in another mode.
func (c *Controller) Decide(current Mode) Decision {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == ModeUnknown {
		c.mode = current // a new or reset controller adopts the mode
	} else if current != c.mode {
		c.resetEvidence()
		c.mode = current
	}
	if c.probation != ModeUnknown && current != c.probation {
		// Left by another decision or an operator: probation is over,
		// and the fleet's claim did not carry the model further.
		c.ignoreFleet(fmt.Sprintf("the model left %v, entered on the fleet's word, for %v", c.probation, current))
	}
	ev := c.evidence()
	d := c.decide(current, &ev)
	// The tests made and the trip cleared are part of the evidence.
	ev.NextTest, ev.PromotionTests, ev.Tripped = c.cfg.MinSamples<<c.nextLook, c.promotionTests, c.tripped
	d.From, d.Evidence = current, ev
	if d.Changed {
		c.resetEvidence()
		c.mode = d.To
	} else {
		d.To = current
	}
	return d
}

func (c *Controller) decide(current Mode, ev *Evidence) Decision {
	maxMode := c.cfg.MaxMode
	switch {
	case current == ModeEmergency:
		c.tripped = ""
		return Decision{Reason: "EMERGENCY is left only by an operator command"}
	case c.tripped != "":
		return Decision{To: ModeEmergency, Changed: true, Reason: c.tripped}
	case !current.Valid():
		return Decision{Reason: fmt.Sprintf("mode %v: nothing to decide", current)}
	case current > maxMode:
		return Decision{To: maxMode, Changed: true, Reason: fmt.Sprintf("%v is above MaxMode %v", current, maxMode)}
	case current == ModeLearning:
		return c.decideLearning(ev, maxMode)
	default:
		return c.decideSplit(ev, current, maxMode)
	}
}

// look reports whether a test is due with n samples per compared arm,
// and if so the significance level of a demotion test, from the budget
// of the current mode.
func (c *Controller) look(n int) (demoteAlpha float64, ok bool) {
	if n < c.cfg.MinSamples {
		return 0, false
	}
	k := bits.Len(uint(n/c.cfg.MinSamples)) - 1
	if k < c.nextLook {
		return 0, false
	}
	c.nextLook = k + 1
	return c.spend(k + 1), true
}

// promotionAlpha spends the significance level of the model's next
// promotion test, from the budget of its life.
func (c *Controller) promotionAlpha() float64 {
	c.promotionTests++
	return c.spend(c.promotionTests)
}

// spend returns the share of α = 1 − Confidence given to the j-th test
// of a budget, α·6/(π²j²): the shares of all j sum to α.
func (c *Controller) spend(j int) float64 {
	return (1 - c.cfg.Confidence) * 6 / (math.Pi * math.Pi * float64(j) * float64(j))
}

func (c *Controller) waiting() string {
	return fmt.Sprintf("next test at %d samples", c.cfg.MinSamples<<c.nextLook)
}

func (c *Controller) decideLearning(ev *Evidence, maxMode Mode) Decision {
	sum := ev.Shadow.shadowSummary()
	if maxMode <= ModeLearning {
		return Decision{Reason: fmt.Sprintf("LEARNING is MaxMode; %s", sum)}
	}
	if d, ok := c.fleetEntry(ev, maxMode); ok {
		return d
	}
	if _, due := c.look(ev.Shadow.N); !due {
		return Decision{Reason: fmt.Sprintf("%s; %s", sum, c.waiting())}
	}
	alpha := c.promotionAlpha()
	if p := ev.Shadow.PImprove; p < alpha {
		return Decision{To: ModeCollaboration, Changed: true, Reason: fmt.Sprintf(
			"%s, p=%s < α=%s%s: predicted better than the default by more than %s with %s confidence",
			sum, fmtP(p), fmtP(alpha), c.lifeTest(), fmtPercent(c.cfg.MinEffect), fmtPercent(c.cfg.Confidence))}
	}
	return Decision{Reason: fmt.Sprintf("%s, p=%s ≥ α=%s%s: no significant improvement; %s",
		sum, fmtP(ev.Shadow.PImprove), fmtP(alpha), c.lifeTest(), c.waiting())}
}

func (c *Controller) decideSplit(ev *Evidence, current, maxMode Mode) Decision {
	sum := splitSummary(ev.Arms[ArmModel], ev.Arms[ArmControl])
	capped := ""
	if current >= maxMode {
		capped = fmt.Sprintf("; %v is MaxMode", current)
	}
	if current == ModeCollaboration {
		if d, ok := c.fleetSplit(ev, sum, maxMode); ok {
			return d
		}
	}
	alpha, due := c.look(min(ev.Split.N, ev.Split.BaselineN))
	if !due {
		return Decision{Reason: fmt.Sprintf("%s%s; %s per arm", sum, capped, c.waiting())}
	}
	if p := ev.Split.PRegress; p < alpha {
		return Decision{To: current - 1, Changed: true, Reason: fmt.Sprintf(
			"%s, p=%s < α=%s: model worse than control with %s confidence",
			sum, fmtP(p), fmtP(alpha), fmtPercent(c.cfg.Confidence))}
	}
	if capped != "" {
		return Decision{Reason: fmt.Sprintf("%s, no significant regression (p=%s)%s",
			sum, fmtP(ev.Split.PRegress), capped)}
	}
	alpha = c.promotionAlpha()
	if p := ev.Split.PImprove; p < alpha {
		return Decision{To: current + 1, Changed: true, Reason: fmt.Sprintf(
			"%s, p=%s < α=%s%s: model better than control by more than %s with %s confidence",
			sum, fmtP(p), fmtP(alpha), c.lifeTest(), fmtPercent(c.cfg.MinEffect), fmtPercent(c.cfg.Confidence))}
	}
	return Decision{Reason: fmt.Sprintf("%s, p=%s ≥ α=%s%s: no significant improvement; %s per arm",
		sum, fmtP(ev.Split.PImprove), fmtP(alpha), c.lifeTest(), c.waiting())}
}

// lifeTest: " (promotion test 3 of the model's life)", after a promotion
// test's α, which shrinks with each.
func (c *Controller) lifeTest() string {
	return fmt.Sprintf(" (promotion test %d of the model's life)", c.promotionTests)
}

// splitSummary: "model 52.1±1.30 vs control 40.2±1.10 over 64/61
// samples", each mean with its standard error.
func splitSummary(m, k ArmStats) string {
	return fmt.Sprintf("model %s±%s vs control %s±%s over %d/%d samples",
		fmtNum(m.Mean), fmtNum(m.StdErr()), fmtNum(k.Mean), fmtNum(k.StdErr()), m.N, k.N)
}

// shadowSummary: "predicted 52.1 vs 40.2 under the default, +11.9±0.80
// over 64 shadow samples".
func (cmp Comparison) shadowSummary() string {
	return fmt.Sprintf("predicted %s vs %s under the default, %s%s±%s over %d shadow samples",
		fmtNum(cmp.Mean), fmtNum(cmp.BaselineMean), sign(cmp.Effect), fmtNum(math.Abs(cmp.Effect)), fmtNum(cmp.StdErr), cmp.N)
}

// welford accumulates a mean and variance in one pass.
type welford struct {
	n        int
	mean, m2 float64
}

func (w *welford) add(x float64) {
	w.n++
	d := x - w.mean
	w.mean += d / float64(w.n)
	w.m2 += d * (x - w.mean)
}

func (w welford) stats() ArmStats {
	s := ArmStats{N: w.n, Mean: w.mean}
	if w.n > 1 {
		s.Variance = w.m2 / float64(w.n-1)
	}
	return s
}

func welchStdErr(a, b ArmStats) float64 {
	if a.N < 2 || b.N < 2 {
		return 0
	}
	return math.Sqrt(a.Variance/float64(a.N) + b.Variance/float64(b.N))
}

// upperTail returns P(Z > z) for a standard normal Z.
func upperTail(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }

// normalQuantile returns z with P(Z ≤ z) = p, for 0 < p < 1.
func normalQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func sign(x float64) string {
	if x < 0 {
		return "−"
	}
	return "+"
}

// fmtNum formats x with about three significant digits, without an
// exponent for the values rewards usually take.
func fmtNum(x float64) string {
	a := math.Abs(x)
	switch {
	case x == 0:
		return "0"
	case !finite(x) || a >= 1e6 || a < 1e-3:
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	dec := min(max(2-int(math.Floor(math.Log10(a))), 0), 5)
	return strconv.FormatFloat(x, 'f', dec, 64)
}

func fmtP(p float64) string { return strconv.FormatFloat(p, 'g', 2, 64) }

func fmtPercent(f float64) string { return strconv.FormatFloat(100*f, 'g', 3, 64) + "%" }
