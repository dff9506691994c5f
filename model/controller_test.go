package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// world simulates a subsystem: rewards under the default and under the
// recommendation, and a learner predicting the latter.
type world struct {
	base, model float64 // true mean rewards of the default and of the recommendation
	sd          float64 // reward noise
	predNoise   float64 // noise of the learner's prediction
	collab      float64 // COLLABORATION share applied
	holdout     float64 // RECOMMENDATION share kept on the default
}

func (w world) outcome(r *rand.Rand, mode Mode) Outcome {
	switch mode {
	case ModeLearning:
		return Outcome{Arm: ArmShadow, Reward: w.base + w.sd*r.NormFloat64(),
			Predicted: w.model + w.predNoise*r.NormFloat64(), HasPrediction: true}
	case ModeCollaboration:
		if r.Float64() < w.collab {
			return Outcome{Arm: ArmModel, Reward: w.model + w.sd*r.NormFloat64()}
		}
		return Outcome{Arm: ArmControl, Reward: w.base + w.sd*r.NormFloat64()}
	case ModeRecommendation:
		if r.Float64() < w.holdout {
			return Outcome{Arm: ArmControl, Reward: w.base + w.sd*r.NormFloat64()}
		}
		return Outcome{Arm: ArmModel, Reward: w.model + w.sd*r.NormFloat64()}
	default:
		return Outcome{Arm: ArmFallback, Reward: w.base + w.sd*r.NormFloat64()}
	}
}

// run feeds steps outcomes of the current mode, deciding every `every`
// outcomes and following the decisions. It returns the decisions that
// changed the mode.
func (w world) run(c *Controller, seed uint64, mode Mode, steps, every int) (Mode, []Decision) {
	r := rand.New(rand.NewPCG(seed, 0x6d6c627066))
	var changes []Decision
	for i := 1; i <= steps; i++ {
		c.Observe(w.outcome(r, mode))
		if i%every == 0 {
			if d := c.Decide(mode); d.Changed {
				changes = append(changes, d)
				mode = d.To
			}
		}
	}
	return mode, changes
}

var (
	better = world{base: 40, model: 52, sd: 10, predNoise: 5, collab: 0.5, holdout: 0.05}
	worse  = world{base: 40, model: 35, sd: 10, predNoise: 5, collab: 0.5, holdout: 0.05}
	equal  = world{base: 40, model: 40, sd: 10, predNoise: 5, collab: 0.5, holdout: 0.05}
)

var splitReason = regexp.MustCompile(`model [0-9.]+±[0-9.]+ vs control [0-9.]+±[0-9.]+ over \d+/\d+ samples, p=[0-9.e-]+`)

func TestControllerPromotesBetterModel(t *testing.T) {
	for seed := range uint64(10) {
		c := NewController(DefaultControllerConfig())
		mode, changes := better.run(c, seed, ModeLearning, 5000, 20)
		if mode != ModeRecommendation || len(changes) != 2 {
			t.Fatalf("seed %d: ended in %v after %v", seed, mode, changes)
		}
		if changes[0].From != ModeLearning || changes[0].To != ModeCollaboration ||
			changes[1].From != ModeCollaboration || changes[1].To != ModeRecommendation {
			t.Errorf("seed %d: path %v", seed, changes)
		}
		if r := changes[0].Reason; !strings.Contains(r, "predicted") || !strings.Contains(r, "shadow samples") || !strings.Contains(r, "p=") {
			t.Errorf("LEARNING promotion reason %q", r)
		}
		if r := changes[1].Reason; !splitReason.MatchString(r) {
			t.Errorf("COLLABORATION promotion reason %q lacks the numbers", r)
		}
		if ev := changes[1].Evidence; ev.Split.N < 30 || ev.Split.BaselineN < 30 || ev.Split.PImprove >= 0.01 {
			t.Errorf("promoted on %+v", ev.Split)
		}
	}
}

func TestControllerNeverPromotesWorseModel(t *testing.T) {
	for seed := range uint64(20) {
		for _, start := range []Mode{ModeLearning, ModeCollaboration, ModeRecommendation} {
			c := NewController(DefaultControllerConfig())
			mode, changes := worse.run(c, seed, start, 10000, 10)
			for _, d := range changes {
				if d.To > d.From {
					t.Fatalf("seed %d from %v: promoted %v", seed, start, d)
				}
			}
			if mode != ModeLearning {
				t.Errorf("seed %d from %v: ended in %v, want LEARNING", seed, start, mode)
			}
			if start > ModeLearning && (len(changes) == 0 || !strings.Contains(changes[0].Reason, "worse than control")) {
				t.Errorf("seed %d from %v: demotion %v", seed, start, changes)
			}
		}
	}
}

func TestControllerDemotesFromCollaboration(t *testing.T) {
	c := NewController(DefaultControllerConfig())
	mode, changes := worse.run(c, 7, ModeCollaboration, 2000, 10)
	if mode != ModeLearning || len(changes) != 1 || changes[0].From != ModeCollaboration {
		t.Fatalf("ended in %v after %v", mode, changes)
	}
	d := changes[0]
	if !splitReason.MatchString(d.Reason) || d.Evidence.Split.PRegress >= 0.01 || d.Evidence.Split.Effect >= 0 {
		t.Errorf("demotion %q on %+v", d.Reason, d.Evidence.Split)
	}
	// The evidence was reset for the new mode.
	if ev := c.Evidence(); ev.Mode != ModeLearning || ev.Arms[ArmModel].N > 10*2000 {
		t.Errorf("evidence after demotion: %+v", ev)
	}
}

// An equal model must rarely be promoted, however long it runs and
// however often the controller looks.
func TestControllerEqualModelFalsePositives(t *testing.T) {
	const seeds, steps = 300, 3000
	for _, cfg := range []ControllerConfig{
		DefaultControllerConfig(),
		{MinSamples: 30, Confidence: 0.99, MinEffect: 0}, // no margin: the hardest case
	} {
		for _, start := range []Mode{ModeLearning, ModeCollaboration} {
			t.Run(fmt.Sprintf("%v/%v", cfg.MinEffect, start), func(t *testing.T) {
				t.Parallel()
				falsePositives(t, cfg, start, seeds, steps)
			})
		}
	}
}

// falsePositives counts the runs of an equal model whose first mode
// change is a promotion, and those where it is a demotion.
func falsePositives(t *testing.T, cfg ControllerConfig, start Mode, seeds, steps int) {
	promoted, demoted := 0, 0
	for seed := range uint64(seeds) {
		_, changes := equal.run(NewController(cfg), seed, start, steps, 10)
		if len(changes) == 0 {
			continue
		}
		if changes[0].To > changes[0].From {
			promoted++
		} else {
			demoted++
		}
	}
	t.Logf("%d promoted, %d demoted of %d runs", promoted, demoted, seeds)
	if promoted > seeds*3/100 {
		t.Errorf("equal model promoted in %d of %d runs", promoted, seeds)
	}
	if demoted > seeds*3/100 {
		t.Errorf("equal model demoted in %d of %d runs", demoted, seeds)
	}
}

func TestControllerMaxMode(t *testing.T) {
	cfg := DefaultControllerConfig()
	cfg.MaxMode = ModeCollaboration
	c := NewController(cfg)
	mode, changes := better.run(c, 1, ModeLearning, 5000, 20)
	if mode != ModeCollaboration || len(changes) != 1 {
		t.Fatalf("MaxMode COLLABORATION: ended in %v after %v", mode, changes)
	}
	if d := c.Decide(ModeCollaboration); d.Changed || !strings.Contains(d.Reason, "MaxMode") {
		t.Errorf("at MaxMode: %v", d)
	}

	cfg.MaxMode = ModeLearning
	c = NewController(cfg)
	mode, changes = better.run(c, 1, ModeLearning, 5000, 20)
	if mode != ModeLearning || len(changes) != 0 {
		t.Fatalf("MaxMode LEARNING: ended in %v after %v", mode, changes)
	}
	if d := c.Decide(ModeLearning); !strings.Contains(d.Reason, "LEARNING is MaxMode") {
		t.Errorf("reason %q", d.Reason)
	}
	// A mode above MaxMode (the cap was lowered) is brought down to it.
	if d := c.Decide(ModeRecommendation); !d.Changed || d.To != ModeLearning {
		t.Errorf("above MaxMode: %v", d)
	}
	cfg.MaxMode = ModeEmergency
	c = NewController(cfg)
	if d := c.Decide(ModeLearning); !d.Changed || d.To != ModeEmergency {
		t.Errorf("MaxMode EMERGENCY: %v", d)
	}
}

func TestControllerTooFewSamples(t *testing.T) {
	c := NewController(DefaultControllerConfig())
	for range 29 {
		c.Observe(Outcome{Arm: ArmShadow, Reward: 1 + rand.Float64(), Predicted: 100, HasPrediction: true})
	}
	d := c.Decide(ModeLearning)
	if d.Changed || !strings.Contains(d.Reason, "next test at 30 samples") {
		t.Errorf("29 samples: %v", d)
	}
	c.Observe(Outcome{Arm: ArmShadow, Reward: 1, Predicted: 100, HasPrediction: true})
	if d := c.Decide(ModeLearning); !d.Changed || d.To != ModeCollaboration {
		t.Errorf("30 samples of a huge effect: %v", d)
	}

	// COLLABORATION needs MinSamples on both arms.
	c = NewController(DefaultControllerConfig())
	c.Decide(ModeCollaboration)
	for i := range 200 {
		c.Observe(Outcome{Arm: ArmModel, Reward: 100 + float64(i%7)})
	}
	for i := range 29 {
		c.Observe(Outcome{Arm: ArmControl, Reward: 1 + float64(i%5)})
	}
	if d := c.Decide(ModeCollaboration); d.Changed || !strings.Contains(d.Reason, "200/29 samples") {
		t.Errorf("29 control samples: %v", d)
	}
	// Shadow outcomes without a prediction are no evidence for LEARNING.
	c = NewController(DefaultControllerConfig())
	for range 100 {
		c.Observe(Outcome{Arm: ArmShadow, Reward: 1, Predicted: 100})
	}
	if d := c.Decide(ModeLearning); d.Changed || d.Evidence.Shadow.N != 0 || d.Evidence.Arms[ArmShadow].N != 100 {
		t.Errorf("shadow outcomes without predictions: %v %+v", d, d.Evidence.Shadow)
	}
}

func TestControllerEmergency(t *testing.T) {
	c := NewController(DefaultControllerConfig())
	c.Decide(ModeEmergency)
	for range 1000 {
		c.Observe(Outcome{Arm: ArmModel, Reward: 100})
		c.Observe(Outcome{Arm: ArmControl, Reward: 1})
		c.Observe(Outcome{Arm: ArmShadow, Reward: 1, Predicted: 100, HasPrediction: true})
	}
	for range 3 {
		if d := c.Decide(ModeEmergency); d.Changed || d.To != ModeEmergency || !strings.Contains(d.Reason, "operator") {
			t.Fatalf("left EMERGENCY: %v", d)
		}
	}

	c = NewController(DefaultControllerConfig())
	c.TripCorrupted(ErrCorruptedDataset)
	c.Trip("second reason") // the first is kept
	for range 2 {           // the caller may fail to apply it: it stays tripped
		d := c.Decide(ModeRecommendation)
		if !d.Changed || d.To != ModeEmergency || d.Reason != "corrupted data: dataset corrupted" {
			t.Fatalf("tripped: %v", d)
		}
	}
	if d := c.Decide(ModeEmergency); d.Changed {
		t.Errorf("left EMERGENCY: %v", d)
	}
	if _, tripped := c.Tripped(); tripped {
		t.Error("trip survived reaching EMERGENCY")
	}
	c.TripOperator("drain")
	if r, _ := c.Tripped(); r != "operator command: drain" {
		t.Errorf("operator trip %q", r)
	}
	if d := c.Decide(ModeLearning); d.To != ModeEmergency || d.Evidence.Tripped == "" {
		t.Errorf("operator trip: %v", d)
	}
	c.Reset()
	if _, tripped := c.Tripped(); tripped {
		t.Error("Reset kept the trip")
	}
	c.TripLeaseLost(5e9, 7e9)
	if r, _ := c.Tripped(); !strings.Contains(r, "lease lost: expired 2s") {
		t.Errorf("lease trip %q", r)
	}
	if d := c.Decide(ModeUnknown); !d.Changed || d.To != ModeEmergency {
		t.Errorf("tripped in UNKNOWN: %v", d)
	}
	c.Reset()
	if d := c.Decide(ModeUnknown); d.Changed {
		t.Errorf("UNKNOWN: %v", d)
	}
}

func TestControllerEvidence(t *testing.T) {
	c := NewController(ControllerConfig{MinSamples: 2, Confidence: 0.95, MinEffect: 0.1})
	c.Decide(ModeLearning)
	for _, r := range []float64{1, 2, 3, 4} {
		c.Observe(Outcome{Arm: ArmModel, Reward: r})
	}
	for _, r := range []float64{1, 1, 2, 2} {
		c.Observe(Outcome{Arm: ArmControl, Reward: r})
	}
	c.Observe(Outcome{Arm: ArmModel, Reward: math.NaN()})
	c.Observe(Outcome{Arm: ArmModel, Reward: math.Inf(1)})
	c.Observe(Outcome{Arm: Arm(9), Reward: 1})
	ev := c.Evidence()
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if ev.Arms[ArmModel].N != 4 || ev.Arms[ArmControl].N != 4 || ev.Dropped != 3 {
		t.Fatalf("counts %+v dropped %d", ev.Arms, ev.Dropped)
	}
	near("model mean", ev.Arms[ArmModel].Mean, 2.5)
	near("model variance", ev.Arms[ArmModel].Variance, 5.0/3)
	near("control variance", ev.Arms[ArmControl].Variance, 1.0/3)
	se := math.Sqrt(5.0/3/4 + 1.0/3/4)
	s := ev.Split
	near("effect", s.Effect, 1)
	near("margin", s.Margin, 0.15)
	near("stderr", s.StdErr, se)
	// Welch: ν = (5/12+1/12)² / ((5/12)²/3 + (1/12)²/3) = 108/26; P(T_ν >
	// 0.85/se) and P(T_ν < 1/se), se = √0.5, and the 97.5 % quantile of
	// T_ν, 2.7363569181339500, by numerical integration of the density
	// (mpmath, 30 digits).
	near("df", s.DF, 108.0/26)
	near("p improve", s.PImprove, 0.14667372065150649)
	near("p regress", s.PRegress, 1-0.11384122336115073)
	near("lower", s.Lower, 1-2.7363569181339500*se)
	near("upper", s.Upper, 1+2.7363569181339500*se)

	// Paired shadow evidence.
	for _, o := range [][2]float64{{10, 12}, {10, 13}, {11, 12}} {
		c.Observe(Outcome{Arm: ArmShadow, Reward: o[0], Predicted: o[1], HasPrediction: true})
	}
	sh := c.Evidence().Shadow
	if sh.N != 3 || sh.BaselineN != 3 {
		t.Fatalf("shadow %+v", sh)
	}
	near("shadow mean", sh.Mean, 37.0/3)
	near("shadow baseline", sh.BaselineMean, 31.0/3)
	near("shadow effect", sh.Effect, 2)
	near("shadow stderr", sh.StdErr, math.Sqrt(1.0/3))
	// Paired: ν = 2, margin 0.1·31/3; same integration.
	near("shadow df", sh.DF, 2)
	near("shadow p improve", sh.PImprove, 0.11802405691397162)
	near("shadow p regress", sh.PRegress, 1-0.037089950113724269)
	near("shadow lower", sh.Lower, 2-4.3026527297494639*math.Sqrt(1.0/3))

	// Deciding in another mode resets the evidence.
	c.Decide(ModeCollaboration)
	if ev := c.Evidence(); ev.Arms[ArmModel].N != 0 || ev.Shadow.N != 0 || ev.Dropped != 0 || ev.Mode != ModeCollaboration {
		t.Errorf("evidence not reset: %+v", ev)
	}
	// One sample a side: no test, no NaN.
	c.Observe(Outcome{Arm: ArmModel, Reward: 5})
	c.Observe(Outcome{Arm: ArmControl, Reward: 1})
	if s := c.Evidence().Split; s.PImprove != 1 || s.PRegress != 1 || math.IsNaN(s.Lower) || s.StdErr != 0 {
		t.Errorf("single samples: %+v", s)
	}
}

// Constant rewards have no variance: the comparison is decided by the
// means alone.
func TestControllerConstantRewards(t *testing.T) {
	c := NewController(DefaultControllerConfig())
	c.Decide(ModeCollaboration)
	for range 30 {
		c.Observe(Outcome{Arm: ArmModel, Reward: 2})
		c.Observe(Outcome{Arm: ArmControl, Reward: 1})
	}
	if d := c.Decide(ModeCollaboration); !d.Changed || d.To != ModeRecommendation {
		t.Errorf("constant better model: %v", d)
	}
	c.Decide(ModeRecommendation)
	for range 30 {
		c.Observe(Outcome{Arm: ArmModel, Reward: 1})
		c.Observe(Outcome{Arm: ArmControl, Reward: 1})
	}
	if d := c.Decide(ModeRecommendation); d.Changed {
		t.Errorf("constant equal model: %v", d)
	}
}

// Rewards may be negative (minus a latency): the margin is relative to the
// magnitude of the control's mean.
func TestControllerNegativeRewards(t *testing.T) {
	w := world{base: -52, model: -40, sd: 10, predNoise: 5, collab: 0.5, holdout: 0.05}
	mode, _ := w.run(NewController(DefaultControllerConfig()), 3, ModeLearning, 5000, 20)
	if mode != ModeRecommendation {
		t.Errorf("lower latency not promoted: %v", mode)
	}
	w = world{base: -40, model: -41, sd: 0.1, predNoise: 0.1, collab: 0.5, holdout: 0.05}
	mode, changes := w.run(NewController(DefaultControllerConfig()), 3, ModeCollaboration, 5000, 20)
	if mode != ModeLearning || len(changes) != 1 {
		t.Errorf("higher latency: %v after %v", mode, changes)
	}
}

// Tests run at MinSamples, then each time the sample count doubles.
func TestControllerTestSchedule(t *testing.T) {
	c := NewController(ControllerConfig{MinSamples: 10, Confidence: 0.99})
	c.Decide(ModeCollaboration)
	// Both arms get the same rewards: the effect is exactly 0, so no test
	// changes the mode (which would reset the schedule).
	i := 0
	feed := func(n int) {
		for range n {
			r := 1 + float64(i%7)/7
			i++
			c.Observe(Outcome{Arm: ArmModel, Reward: r})
			c.Observe(Outcome{Arm: ArmControl, Reward: r})
		}
	}
	for _, step := range []struct{ feed, next int }{{5, 10}, {5, 20}, {5, 20}, {5, 40}, {50, 80}, {0, 80}} {
		feed(step.feed)
		c.Decide(ModeCollaboration)
		if got := c.Evidence().NextTest; got != step.next {
			t.Fatalf("after %d more samples: next test at %d, want %d", step.feed, got, step.next)
		}
	}
}

func TestNormalHelpers(t *testing.T) {
	if z := normalQuantile(0.975); math.Abs(z-1.959963984540054) > 1e-12 {
		t.Errorf("normalQuantile(0.975) = %v", z)
	}
	if z := normalQuantile(0.99); math.Abs(z-2.3263478740408408) > 1e-12 {
		t.Errorf("normalQuantile(0.99) = %v", z)
	}
	if p := upperTail(1.959963984540054); math.Abs(p-0.025) > 1e-12 {
		t.Errorf("upperTail(1.96) = %v", p)
	}
	if p := upperTail(0); p != 0.5 {
		t.Errorf("upperTail(0) = %v", p)
	}
	for x, want := range map[float64]string{0: "0", 52.1: "52.1", 1.3: "1.30", 1234.6: "1235", -0.5: "-0.500", 1e7: "1e+07", 0.0001: "0.0001"} {
		if got := fmtNum(x); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", x, got, want)
		}
	}
}
