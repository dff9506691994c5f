package model

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// life drives one model's controller the way Model and the daemon do: a
// mode change (a decision or an operator's) resets the controller, a
// restart saves its snapshot as JSON and restores it into a new one.
type life struct {
	cfg      ControllerConfig
	c        *Controller
	mode     Mode
	r        *rand.Rand
	w        world
	promoted int // promotions decided by the controller
}

func newLife(cfg ControllerConfig, w world, seed uint64, mode Mode) *life {
	return &life{cfg: cfg, c: NewController(cfg), mode: mode, w: w, r: rand.New(rand.NewPCG(seed, 0x616c706861))}
}

// set changes the mode as Model does: the controller starts afresh.
func (l *life) set(m Mode) {
	if m != l.mode {
		l.mode = m
		l.c.Reset()
	}
}

// feed observes n outcomes of the current mode, deciding every `every`
// and following the decisions.
func (l *life) feed(n, every int) {
	for i := 1; i <= n; i++ {
		l.c.Observe(l.w.outcome(l.r, l.mode))
		if i%every != 0 {
			continue
		}
		if d := l.c.Decide(l.mode); d.Changed {
			if d.To > d.From {
				l.promoted++
			}
			l.set(d.To)
		}
	}
}

// restart saves the controller's snapshot as the daemon does (in every
// mode), and restores it into a new controller; a refused snapshot
// leaves the new controller as it is, as the daemon does.
func (l *life) restart() {
	b, err := json.Marshal(l.c.Snapshot())
	if err != nil {
		panic(err)
	}
	var s ControllerSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		panic(err)
	}
	l.c = NewController(l.cfg)
	_ = l.c.Restore(s, l.mode)
	l.c.Decide(l.mode)
}

// An adversary cycles a model whose recommendation is exactly as good as
// the default, leaving each mode soon after its first test so that as
// many first looks as possible are made; a model with one budget for its
// life is promoted in at most 1 − Confidence of such lives.
type adversary struct {
	name string
	// cycle enters a mode able to promote, lets the controller test, and
	// leaves.
	cycle func(l *life, i int)
}

// stay is long enough for one or two looks at MinSamples 15: COLLABORATION
// gives each arm half the outcomes.
func (l *life) stay() { l.feed(30+l.r.IntN(40), 10) }

var adversaries = []adversary{
	{"operator emergency and back", func(l *life, i int) {
		l.set([]Mode{ModeLearning, ModeCollaboration}[i%2])
		l.stay()
		l.set(ModeEmergency)
		l.c.Decide(ModeEmergency)
	}},
	{"trips", func(l *life, i int) {
		l.set([]Mode{ModeCollaboration, ModeLearning}[i%2])
		l.stay()
		l.c.TripOperator("test")
		if d := l.c.Decide(l.mode); d.Changed {
			l.set(d.To)
		}
		l.c.Decide(l.mode)
	}},
	{"operator promotes and demotes", func(l *life, i int) {
		// RECOMMENDATION by the operator (not counted), then back to
		// COLLABORATION where the controller may promote again.
		l.set(ModeRecommendation)
		l.feed(20, 10)
		l.set(ModeCollaboration)
		l.stay()
		if i%3 == 0 {
			l.set(ModeLearning)
			l.stay()
		}
	}},
	{"restarts in every mode", func(l *life, i int) {
		l.set([]Mode{ModeLearning, ModeCollaboration, ModeEmergency}[i%3])
		l.stay()
		l.restart()
	}},
	{"everything", func(l *life, i int) {
		switch l.r.IntN(5) {
		case 0:
			l.set(ModeEmergency)
		case 1:
			l.c.TripOperator("test")
		case 2:
			l.restart()
		case 3:
			l.set(ModeRecommendation)
		default:
			l.set(ModeLearning)
		}
		l.feed(10, 10)
		l.set([]Mode{ModeLearning, ModeCollaboration}[l.r.IntN(2)])
		l.stay()
	}},
}

// TestControllerFalsePromotionsOverLife: over many seeds of a model no
// better than the default (equal arms, no MinEffect margin: the hardest
// case), cycled by each adversary, the share of lives with a promotion
// stays within 1 − Confidence. The tests of different mode entries are
// independent, so the rate comes close to the budget (about 1 %); a rate
// more than three binomial standard errors above it fails (a 0.1 % chance
// for a controller that keeps its budget), per adversary and over all of
// them. A budget that restarts with each mode promotes in 25 to 40 % of
// these lives.
func TestControllerFalsePromotionsOverLife(t *testing.T) {
	seeds, cycles := 1500, 40
	if testing.Short() {
		seeds = 300
	}
	cfg := ControllerConfig{MinSamples: 15, Confidence: 0.99, MinEffect: 0, MaxMode: ModeRecommendation}
	alpha := 1 - cfg.Confidence
	check := func(t *testing.T, what string, promoted, lives int) {
		t.Helper()
		rate := float64(promoted) / float64(lives)
		t.Logf("%s: %d of %d lives of %d cycles promoted an equal model (%.2f%%, budget %.2f%%)", what, promoted, lives, cycles, 100*rate, 100*alpha)
		if rate > alpha+3*math.Sqrt(alpha*(1-alpha)/float64(lives)) {
			t.Errorf("%s: an equal model was promoted in %.2f%% of lives, above 1 − Confidence = %.2f%%", what, 100*rate, 100*alpha)
		}
	}
	promoted := make([]int, len(adversaries))
	t.Run("adversaries", func(t *testing.T) {
		for i, adv := range adversaries {
			t.Run(strings.ReplaceAll(adv.name, " ", "_"), func(t *testing.T) {
				t.Parallel()
				for seed := range uint64(seeds) {
					l := newLife(cfg, equal, seed, ModeLearning)
					for i := range cycles {
						adv.cycle(l, i)
					}
					if l.promoted > 0 {
						promoted[i]++
					}
				}
				check(t, adv.name, promoted[i], seeds)
			})
		}
	})
	total := 0
	for _, n := range promoted {
		total += n
	}
	check(t, "all adversaries", total, seeds*len(adversaries))
}

// TestControllerFirstLookSmallSample: one look at MinSamples 15 (tcp/cc's)
// per arm, in COLLABORATION (Welch, about 28 degrees of freedom) and in
// LEARNING (paired, 14), over many seeds with one mode entry each: the
// share of false promotions is within the α the first test spends,
// α·6/π² = 0.61 %. Normal quantiles give 1.0 % and 1.3 %.
func TestControllerFirstLookSmallSample(t *testing.T) {
	const seeds = 40000
	cfg := ControllerConfig{MinSamples: 15, Confidence: 0.99, MinEffect: 0, MaxMode: ModeRecommendation}
	first := (1 - cfg.Confidence) * 6 / (math.Pi * math.Pi)
	for _, mode := range []Mode{ModeCollaboration, ModeLearning} {
		promoted := 0
		r := rand.New(rand.NewPCG(3, 5))
		for range seeds {
			c := NewController(cfg)
			c.Decide(mode)
			for range cfg.MinSamples {
				if mode == ModeLearning {
					c.Observe(Outcome{Arm: ArmShadow, Reward: r.NormFloat64(), Predicted: r.NormFloat64(), HasPrediction: true})
					continue
				}
				c.Observe(Outcome{Arm: ArmModel, Reward: r.NormFloat64()})
				c.Observe(Outcome{Arm: ArmControl, Reward: r.NormFloat64()})
			}
			if d := c.Decide(mode); d.Changed && d.To > d.From {
				promoted++
			}
		}
		// The t test's rate is first; allow three binomial standard
		// errors of noise.
		limit := first + 3*math.Sqrt(first*(1-first)/seeds)
		rate := float64(promoted) / seeds
		t.Logf("%v, first look at 15: %d of %d promoted (%.3f%%, α %.3f%%)", mode, promoted, seeds, 100*rate, 100*first)
		if rate > limit {
			t.Errorf("%v: the first look promoted %.3f%% of equal models, want at most α = %.3f%% (+ noise)", mode, 100*rate, 100*first)
		}
	}
}

// TestStudentT checks the t distribution against table values (and the
// closed forms for 1 and 2 degrees of freedom), at integer and
// fractional degrees of freedom.
func TestStudentT(t *testing.T) {
	for _, tc := range []struct {
		p, nu, want float64
	}{
		{0.975, 1, 12.706204736174707}, // Cauchy: tan(π(p − ½))
		{0.975, 2, 4.302652729749464},  // (2p − 1)/√(2p(1 − p))
		{0.95, 5, 2.015048373333024},
		{0.975, 10, 2.228138851986274},
		{0.995, 14, 2.976842734370834},
		{0.999, 5, 5.893429531356006},
		{0.9995, 1, 636.6192487687196},
		{0.99, 30, 2.457261542401},
		{0.975, 108.0 / 26, 2.7363569181339500}, // by numerical integration (mpmath)
		{0.975, math.Inf(1), 1.959963984540054},
	} {
		got := studentQuantile(tc.p, tc.nu)
		if math.Abs(got-tc.want) > 1e-9*tc.want {
			t.Errorf("t quantile %v at ν=%v = %.12f, want %.12f", tc.p, tc.nu, got, tc.want)
		}
		if back := studentUpperTail(tc.want, tc.nu); math.Abs(back-(1-tc.p)) > 1e-12 {
			t.Errorf("P(T_%v > %v) = %v, want %v", tc.nu, tc.want, back, 1-tc.p)
		}
		if lower := studentQuantile(1-tc.p, tc.nu); math.Abs(lower+got) > 1e-9*tc.want {
			t.Errorf("t quantile %v at ν=%v = %v, want %v", 1-tc.p, tc.nu, lower, -got)
		}
	}
	// The example: tcp/cc's first look, α·6/π² with α = 1 %.
	first := 0.01 * 6 / (math.Pi * math.Pi)
	z, t14 := normalQuantile(1-first), studentQuantile(1-first, 14)
	if math.Abs(z-2.507) > 1e-3 || math.Abs(t14-2.878) > 1e-3 {
		t.Errorf("first-look quantiles: z %v, t₁₄ %v; want 2.507 and 2.878", z, t14)
	}
	if studentUpperTail(0, 3) != 0.5 || studentUpperTail(math.Inf(1), 3) != 0 || studentUpperTail(math.Inf(-1), 3) != 1 {
		t.Error("t tails at 0 and ±∞")
	}
	for _, bad := range []float64{0, 1, -0.1, math.NaN()} {
		if q := studentQuantile(bad, 5); !math.IsNaN(q) {
			t.Errorf("studentQuantile(%v) = %v, want NaN", bad, q)
		}
	}
}

// The promotion budget survives what resets the evidence: Reset (a mode
// change), a restart in another mode or in EMERGENCY, other test
// parameters, and Model.ReInit.
func TestControllerBudgetSurvives(t *testing.T) {
	cfg := ControllerConfig{MinSamples: 2, Confidence: 0.99, MinEffect: 0, MaxMode: ModeRecommendation}
	c := NewController(cfg)
	c.Decide(ModeCollaboration)
	for i := range 64 {
		r := float64(i % 5)
		c.Observe(Outcome{Arm: ArmModel, Reward: r})
		c.Observe(Outcome{Arm: ArmControl, Reward: r})
		c.Decide(ModeCollaboration)
	}
	spent := c.Evidence().PromotionTests
	if spent != 6 { // looks at 2, 4, 8, 16, 32, 64
		t.Fatalf("%d promotion tests, want 6", spent)
	}
	c.Reset()
	c.Decide(ModeLearning)
	if got := c.Evidence().PromotionTests; got != spent {
		t.Fatalf("after Reset: %d promotion tests, want %d", got, spent)
	}
	c.TripOperator("test")
	c.Decide(ModeLearning)
	c.Decide(ModeEmergency)
	snap := c.Snapshot()
	for _, tc := range []struct {
		name string
		cfg  ControllerConfig
		mode Mode
	}{
		{"emergency", cfg, ModeEmergency},
		{"another mode", cfg, ModeCollaboration},
		{"other parameters", ControllerConfig{MinSamples: 30, Confidence: 0.95}, ModeEmergency},
	} {
		d := NewController(tc.cfg)
		err := d.Restore(snap, tc.mode)
		if !errors.Is(err, ErrSnapshotMismatch) || !strings.Contains(err.Error(), "6 promotion tests made so far are counted") {
			t.Errorf("%s: Restore: %v", tc.name, err)
		}
		if got := d.Evidence().PromotionTests; got != spent {
			t.Errorf("%s: restored %d promotion tests, want %d", tc.name, got, spent)
		}
	}

	m, _, _ := modelIn(t, StateInitialized)
	m.Controller().promotionTests = 9
	if err := m.ReInit(Options{}); err != nil {
		t.Fatal(err)
	}
	if got := m.Controller().Evidence().PromotionTests; got != 9 {
		t.Errorf("after ReInit: %d promotion tests, want 9", got)
	}
}

// A snapshot saved before the budget was kept over the model's life
// (no version) is refused whole, saying why.
func TestControllerRestoreRefusesOldSnapshot(t *testing.T) {
	old := `{"mode":"LEARNING","min_samples":30,"confidence":0.99,"min_effect":0.02,"arms":[{"n":0,"mean":0,"m2":0},{"n":0,"mean":0,"m2":0},{"n":0,"mean":0,"m2":0},{"n":4,"mean":1,"m2":0}],` +
		`"diff":{"n":0,"mean":0,"m2":0},"shadow_reward":{"n":0,"mean":0,"m2":0},"shadow_pred":{"n":0,"mean":0,"m2":0},"dropped":0,"tests":1}`
	var s ControllerSnapshot
	if err := json.Unmarshal([]byte(old), &s); err != nil {
		t.Fatal(err)
	}
	c := NewController(ControllerConfig{MinSamples: 30, Confidence: 0.99, MinEffect: 0.02})
	err := c.Restore(s, s.Mode)
	if err == nil || !strings.Contains(err.Error(), "version 0, want 2") || !strings.Contains(err.Error(), "budget starts afresh") {
		t.Fatalf("Restore of a version 0 snapshot: %v", err)
	}
	if ev := c.Evidence(); ev.Arms[ArmShadow].N != 0 || ev.PromotionTests != 0 {
		t.Errorf("a refused snapshot changed the controller: %+v", ev)
	}
}
