package learner

import (
	"math"
	"math/rand/v2"
	"slices"
)

// Config sets a Bandit's prior and how much it trusts each kind of
// evidence. Rewards are on whatever scale the caller uses; variances are
// on the same scale, squared.
type Config struct {
	// PriorMean and PriorVar describe what is believed of an arm's mean
	// reward before any evidence.
	PriorMean float64 `json:"prior_mean"`
	PriorVar  float64 `json:"prior_var"`
	// NoiseVar is the assumed variance of one reward until the arm's own
	// rewards say otherwise (it counts as two pseudo-observations).
	NoiseVar float64 `json:"noise_var"`
	// ModelVar is the variance of a prediction model's systematic error:
	// the uncertainty that remains however many predictions are averaged.
	ModelVar float64 `json:"model_var"`
	// Discount (0 < Discount ≤ 1) is the weight past evidence keeps at
	// each Decay: 0.99 per observation remembers about the last 100.
	Discount float64 `json:"discount"`
}

// DefaultConfig suits rewards that are natural logarithms of a rate: an
// unknown arm is within a factor of e^3 of anything, one reward is within
// a factor of about 1.6, a prediction model within a factor of about 2.
func DefaultConfig() Config {
	return Config{PriorMean: 0, PriorVar: 9, NoiseVar: 0.25, ModelVar: 0.5, Discount: 0.99}
}

// Arm is the evidence about one arm.
type Arm struct {
	// Real holds the rewards observed when the arm ran.
	Real Estimate `json:"real"`
	// Predicted holds counterfactual predictions of its reward.
	Predicted Estimate `json:"predicted"`
	// Bias is added to the predictions' mean: the prediction model's
	// known systematic error, as measured against real rewards.
	Bias float64 `json:"bias,omitempty"`
	// ModelVar, when positive, replaces Config.ModelVar for this arm's
	// predictions.
	ModelVar float64 `json:"model_var,omitempty"`
	// Prior is evidence from elsewhere (a fleet of hosts), on the same
	// scale as Real and weighed like it, set afresh by the caller before
	// each decision; it is not kept with the arm's own evidence.
	Prior Estimate `json:"-"`
}

// Posterior is a Gaussian belief about an arm's mean reward.
type Posterior struct {
	Mean float64 `json:"mean"`
	Var  float64 `json:"var"`
}

// Bandit is a Gaussian multi-armed bandit over named arms. It is not safe
// for concurrent use.
type Bandit struct {
	Config Config          `json:"config"`
	Arms   map[string]*Arm `json:"arms"`
}

// New returns a bandit over arms.
func New(cfg Config, arms ...string) *Bandit {
	b := &Bandit{Config: cfg, Arms: make(map[string]*Arm, len(arms))}
	for _, a := range arms {
		b.Arms[a] = new(Arm)
	}
	return b
}

func (b *Bandit) arm(name string) *Arm {
	if b.Arms == nil {
		b.Arms = make(map[string]*Arm)
	}
	a := b.Arms[name]
	if a == nil {
		a = new(Arm)
		b.Arms[name] = a
	}
	return a
}

// Names returns the arms' names, sorted.
func (b *Bandit) Names() []string {
	names := make([]string, 0, len(b.Arms))
	for n := range b.Arms {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Observe adds a reward observed when arm ran.
func (b *Bandit) Observe(arm string, reward float64) {
	b.arm(arm).Real.Add(reward, 1)
}

// Predict adds a counterfactual prediction of arm's reward.
func (b *Bandit) Predict(arm string, reward float64) {
	b.arm(arm).Predicted.Add(reward, 1)
}

// Decay makes every arm forget by Config.Discount: call it once per
// observation of the subject, so that evidence ages at the same pace on
// every arm, including arms no longer tried, whose old evidence would
// otherwise stand forever after conditions change.
func (b *Bandit) Decay() {
	for _, a := range b.Arms {
		a.Real.Decay(b.Config.Discount)
		a.Predicted.Decay(b.Config.Discount)
	}
}

// Noise returns the per-reward variance of e, shrunk towards NoiseVar.
func (b *Bandit) Noise(e Estimate) float64 { return b.noise(e) }

func (b *Bandit) noise(e Estimate) float64 {
	const k = 2 // pseudo-observations of NoiseVar
	v := (e.S + k*b.Config.NoiseVar) / (e.W + k)
	return math.Max(v, 1e-9)
}

// Posterior combines the prior, the real rewards and the predictions of
// arm, each weighted by its precision.
func (b *Bandit) Posterior(arm string) Posterior {
	prec := 1 / math.Max(b.Config.PriorVar, 1e-9)
	num := b.Config.PriorMean * prec
	if a := b.Arms[arm]; a != nil {
		if w := a.Real.W; w > 0 {
			p := w / b.noise(a.Real)
			prec += p
			num += a.Real.Mean * p
		}
		if w := a.Prior.W; w > 0 {
			// No more trusted, reward for reward, than the
			// assumed noise: a prior's claimed spread is not
			// evidence.
			p := w / math.Max(b.noise(a.Prior), b.Config.NoiseVar)
			prec += p
			num += a.Prior.Mean * p
		}
		if w := a.Predicted.W; w > 0 {
			mv := b.Config.ModelVar
			if a.ModelVar > 0 {
				mv = a.ModelVar
			}
			p := 1 / (b.noise(a.Predicted)/w + mv)
			prec += p
			num += (a.Predicted.Mean + a.Bias) * p
		}
	}
	return Posterior{Mean: num / prec, Var: 1 / prec}
}

// ProbBetter returns the posterior probability that arm's mean reward
// exceeds base's by more than margin.
func (b *Bandit) ProbBetter(arm, base string, margin float64) float64 {
	pa, pb := b.Posterior(arm), b.Posterior(base)
	sd := math.Sqrt(pa.Var + pb.Var)
	return 0.5 * math.Erfc(-(pa.Mean-pb.Mean-margin)/(sd*math.Sqrt2))
}

// Sample draws one arm among candidates by Thompson sampling: the arm
// whose mean, drawn from its posterior, is largest. It returns "" for no
// candidates.
func (b *Bandit) Sample(rng *rand.Rand, candidates []string) string {
	best, bestV := "", math.Inf(-1)
	for _, c := range candidates {
		p := b.Posterior(c)
		v := p.Mean + math.Sqrt(p.Var)*rng.NormFloat64()
		if v > bestV {
			best, bestV = c, v
		}
	}
	return best
}

// Best returns the candidate with the largest posterior mean, "" for no
// candidates.
func (b *Bandit) Best(candidates []string) string {
	best, bestV := "", math.Inf(-1)
	for _, c := range candidates {
		if m := b.Posterior(c).Mean; m > bestV {
			best, bestV = c, m
		}
	}
	return best
}
