package tcp

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/model"
)

// LearnConfig tunes the per-destination learner.
type LearnConfig struct {
	// PrefixBits4 and PrefixBits6 group destinations: one learner per
	// /24 (IPv4) and per /64 (IPv6) by default.
	PrefixBits4 int `json:"prefix_bits4" cfg:"prefix_bits4"`
	PrefixBits6 int `json:"prefix_bits6" cfg:"prefix_bits6"`
	// MinBytes is the least a connection must have sent (and had
	// acknowledged) to count as a transfer: control connections and
	// receivers say nothing about the sender's congestion control.
	// Default 64 KiB.
	MinBytes uint64 `json:"min_bytes" cfg:"min_bytes"`
	// MinGain is the relative goodput improvement a recommendation must
	// promise over the default (default 0.10: 10 %).
	MinGain float64 `json:"min_gain" cfg:"min_gain"`
	// MinDefault is the number of transfers on the default algorithm a
	// destination needs before anything is recommended for it (default 5).
	MinDefault int `json:"min_default" cfg:"min_default"`
	// Confidence is the posterior probability of beating the default by
	// MinGain a recommendation needs (default 0.95); it is withdrawn when
	// the probability of beating the default at all falls below 0.5.
	Confidence float64 `json:"confidence" cfg:"confidence"`
}

func (c LearnConfig) withDefaults() LearnConfig {
	if c.PrefixBits4 == 0 {
		c.PrefixBits4 = 24
	}
	if c.PrefixBits6 == 0 {
		c.PrefixBits6 = 64
	}
	if c.MinBytes == 0 {
		c.MinBytes = 64 << 10
	}
	if c.MinGain == 0 {
		c.MinGain = 0.10
	}
	if c.MinDefault == 0 {
		c.MinDefault = 5
	}
	if c.Confidence == 0 {
		c.Confidence = 0.95
	}
	return c
}

func (c LearnConfig) validate() error {
	switch {
	case c.PrefixBits4 < 0 || c.PrefixBits4 > 32:
		return config.Field("learn.prefix_bits4", "%d: want 0 to 32", c.PrefixBits4)
	case c.PrefixBits6 < 0 || c.PrefixBits6 > 128:
		return config.Field("learn.prefix_bits6", "%d: want 0 to 128", c.PrefixBits6)
	case c.MinGain < 0:
		return config.Field("learn.min_gain", "%v: want ≥ 0", c.MinGain)
	case c.Confidence != 0 && (c.Confidence < 0.5 || c.Confidence >= 1):
		return config.Field("learn.confidence", "%v: want 0.5 to 1 (exclusive)", c.Confidence)
	}
	return nil
}

// withdrawBelow is the probability of beating the default below which a
// recommendation is withdrawn.
const withdrawBelow = 0.5

// Destination is what the learner knows about one destination prefix.
type Destination struct {
	// Ref is the natural logarithm of a reference goodput (bytes/s), the
	// first one seen: the bandit's rewards are ln(goodput) − Ref.
	Ref float64 `json:"ref"`
	// Bandit holds one arm per algorithm.
	Bandit *learner.Bandit `json:"bandit"`
	// Recommended is the learner's current recommendation, "" for none.
	Recommended string `json:"recommended,omitempty"`
	// Transfers counts the connections learned from.
	Transfers int `json:"transfers"`
	// RecommendedAt is the value of Transfers when the current
	// recommendation was made.
	RecommendedAt int `json:"recommended_at,omitempty"`
	// Loss estimates the loss rate seen by the default algorithm.
	Loss learner.Estimate `json:"loss"`
	// Base is the baseline the mode controller's rewards are relative to
	// (the default's mean, as Bandit's rewards) while connections come in
	// BaseMode: taken afresh from the default's mean at the first
	// connection of another mode, then fixed (see reward).
	Base     float64    `json:"base,omitempty"`
	BaseMode model.Mode `json:"base_mode,omitempty"`
}

// modeBase returns the baseline of the mode controller's reward for a
// connection made in mode, now the default's mean. The controller
// compares the outcomes of one mode with each other (MODEL against
// CONTROL, predictions against the default), so they share a baseline:
// one that moved with every default transfer added its own estimation
// noise to each reward, which the split's test counted as the arms'
// spread (on entering COLLABORATION on a baseline of one or two
// transfers, that doubled the CONTROL arm's variance). A new mode's
// evidence starts afresh, and so does its baseline, with all the default
// transfers seen by then.
func (d *Destination) modeBase(mode model.Mode, now float64) float64 {
	if d.BaseMode != mode || mode == model.ModeUnknown {
		d.Base, d.BaseMode = now, mode
	}
	return d.Base
}

// Change is a change the learner wants in the recommendation map.
type Change struct {
	Prefix netip.Prefix
	CC     string // "" withdraws
	Reason string
}

// Learner learns, per destination prefix, which congestion control gives
// the best goodput. It is safe for concurrent use.
type Learner struct {
	mu      sync.Mutex
	cfg     LearnConfig
	dflt    string
	allowed []string
	rng     *rand.Rand
	dests   map[netip.Prefix]*Destination
	// calib holds, per algorithm, the residuals ln(observed) −
	// ln(predicted) of the counterfactual model: error backpropagation.
	calib map[string]*learner.Estimate
	// fleet is the fleet's prior per prefix and algorithm (FleetMerge),
	// fleetDirty the prefixes learned from since the last FleetExport.
	fleet          map[netip.Prefix]map[string]learner.Estimate
	fleetDirty     map[netip.Prefix]bool
	fleetOverruled map[fleetArm]bool
	// fleetBacked holds, per prefix, the fleet's claim on the standing
	// recommendation the fleet's prior helped choose (FleetHint).
	fleetBacked map[netip.Prefix]backedClaim
}

// NewLearner returns an empty learner choosing among allowed, dflt being
// the kernel's default algorithm.
func NewLearner(cfg LearnConfig, dflt string, allowed []string, seed uint64) *Learner {
	return &Learner{
		cfg: cfg.withDefaults(), dflt: dflt, allowed: slices.Clone(allowed),
		rng:   rand.New(rand.NewPCG(seed, seed^0x6d6c627066)),
		dests: make(map[netip.Prefix]*Destination),
		calib: make(map[string]*learner.Estimate),
	}
}

// Default returns the default algorithm the learner compares with.
func (l *Learner) Default() string { return l.dflt }

// PrefixOf returns the destination prefix an address is learned under.
func (l *Learner) PrefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := l.cfg.PrefixBits6
	if a.Is4() {
		bits = l.cfg.PrefixBits4
	}
	p, _ := a.Prefix(bits)
	return p
}

func lnRate(g float64) float64 { return math.Log(math.Max(g, 1)) }

// reward turns a log goodput x into the mode controller's reward on a
// destination whose default has the mean log goodput base: 1 plus the log
// of the goodput ratio. 1 is "as good as the default", 1.1 about 10 %
// better, whatever the destination's speed, so that rewards of different
// destinations can be pooled and the controller's relative MinEffect
// reads as a relative goodput gain. Logarithms tame the heavy tails of
// goodput under loss. The base is the mode's (Destination.modeBase).
func reward(x, base float64) float64 { return 1 + x - base }

func (l *Learner) dest(p netip.Prefix, lnG float64) *Destination {
	d := l.dests[p]
	if d == nil {
		cfg := learner.DefaultConfig()
		d = &Destination{Ref: lnG, Bandit: learner.New(cfg, l.allowed...)}
		l.dests[p] = d
	}
	return d
}

// Observe learns from one connection. It returns the feedback for the
// model (error backpropagation and the mode controller's evidence), with
// ok false when the connection was not a transfer worth learning from,
// and the change to the recommendation map the new evidence calls for,
// if any.
func (l *Learner) Observe(c *Conn) (fb model.Feedback, ok bool, ch *Change) {
	if c.Arm == model.ArmSkipped || c.Reverted || c.BytesAcked < l.cfg.MinBytes || c.Duration <= 0 || c.CC == "" {
		return fb, false, nil
	}
	if c.Arm == model.ArmModel && c.CC != c.Recommended {
		// The application set its own algorithm after mlbpf's choice at
		// connect (iperf3 -C does): neither evidence about the model's
		// arm nor about the default, since a connection switched away
		// from bbr runs slower than one that never ran it.
		return fb, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := c.Goodput()
	p := l.PrefixOf(c.Peer)
	d := l.dest(p, lnRate(g))
	x := lnRate(g) - d.Ref
	d.Transfers++
	l.markFleet(p)
	d.Bandit.Decay()

	base, haveBase := d.baseline(l.dflt)
	if haveBase {
		base = d.modeBase(c.Mode, base)
	}
	fb = model.Feedback{Arm: c.Arm, Key: p.String(), Value: c.CC, Mode: c.Mode, Generation: c.Generation}
	if haveBase {
		fb.Reward = reward(x, base)
	} else {
		fb.Reward = 1 // the first transfer is its own baseline
	}

	if c.CC == l.dflt {
		d.Bandit.Observe(l.dflt, x)
		d.Loss.Decay(d.Bandit.Config.Discount)
		d.Loss.Add(c.Loss(), 1)
		loss := d.Loss.Mean
		for _, alg := range l.allowed {
			if alg == l.dflt {
				continue
			}
			pg, pok := predictGoodput(c, alg)
			if !pok {
				continue
			}
			px := lnRate(pg) - d.Ref
			d.Bandit.Predict(alg, px)
			if c.Arm == model.ArmShadow && alg == c.Recommended {
				b := base
				if !haveBase {
					b = x
				}
				fb.Predicted = reward(px+l.bias(alg, loss), b)
				fb.HasPrediction = true
			}
		}
	} else {
		// The connection ran another algorithm (the recommendation, on
		// the MODEL arm): real evidence about it.
		d.Bandit.Observe(c.CC, x)
		if a := d.Bandit.Arms[c.CC]; a != nil && a.Predicted.W > 0 && haveBase {
			pred := a.Predicted.Mean + l.bias(c.CC, d.Loss.Mean)
			fb.Predicted = reward(pred, base)
			fb.HasPrediction = true
		}
	}
	if !haveBase && c.CC != l.dflt {
		ok = false // nothing to compare the reward with yet
	} else {
		ok = true
	}
	return fb, ok, l.evaluate(p, d, c.Mode)
}

// Backpropagate takes the prediction error of a MODEL-arm outcome into the
// calibration of the counterfactual model for the algorithm that ran,
// fb.Value (ml_model_error_backpropagation). The calibration is kept per
// algorithm and per loss regime, since the model's error depends on both.
func (l *Learner) Backpropagate(fb model.Feedback) {
	alg := fb.Value
	if fb.Arm != model.ArmModel || !fb.HasPrediction || alg == "" || alg == l.dflt {
		return
	}
	p, err := netip.ParsePrefix(fb.Key)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dests[p]
	if d == nil {
		return
	}
	loss := d.Loss.Mean
	// Predicted already includes the current bias: the residual is the
	// error of the raw prediction.
	resid := fb.Reward - fb.Predicted + l.bias(alg, loss)
	for _, k := range []string{alg, calibKey(alg, loss)} {
		e := l.calib[k]
		if e == nil {
			e = new(learner.Estimate)
			l.calib[k] = e
		}
		e.Decay(calibDiscount)
		e.Add(resid, 1)
	}
}

// calibDiscount is how fast the calibration forgets: about the last 200
// outcomes.
const calibDiscount = 0.995

// lossRegimes bounds the loss regimes calibrated apart.
var lossRegimes = []struct {
	upTo float64
	name string
}{{0.005, "0-0.5%"}, {0.02, "0.5-2%"}, {0.05, "2-5%"}, {0.15, "5-15%"}, {math.Inf(1), "15%+"}}

func calibKey(alg string, loss float64) string {
	for _, r := range lossRegimes {
		if loss < r.upTo {
			return alg + "@" + r.name
		}
	}
	return alg
}

// calibPrior is how many outcomes' worth of trust an estimate needs
// before it counts fully: estimates are shrunk towards their parent (the
// loss regime towards the algorithm, the algorithm towards no bias).
const calibPrior = 2.0

// bias returns the calibrated correction of alg's predictions at loss
// rate loss.
func (l *Learner) bias(alg string, loss float64) float64 {
	global := 0.0
	if e := l.calib[alg]; e != nil && e.W > 0 {
		global = e.Mean * e.W / (e.W + calibPrior)
	}
	if e := l.calib[calibKey(alg, loss)]; e != nil && e.W > 0 {
		return (e.Mean*e.W + global*calibPrior) / (e.W + calibPrior)
	}
	return global
}

// uncalibratedVar is the variance of the counterfactual model's error
// before any real outcome has measured it: a factor of e (2.7) either way.
const uncalibratedVar = 1.0

// modelVar returns the calibrated variance of alg's prediction error at
// loss rate loss.
func (l *Learner) modelVar(alg string, loss float64) float64 {
	v := uncalibratedVar
	if e := l.calib[alg]; e != nil && e.W >= 2 {
		v = (calibPrior*v + e.W*e.Var()) / (calibPrior + e.W)
	}
	if e := l.calib[calibKey(alg, loss)]; e != nil && e.W >= 2 {
		v = (calibPrior*v + e.W*e.Var()) / (calibPrior + e.W)
	}
	return math.Max(v, 0.01)
}

// baseline returns the mean reward of the default on d.
func (d *Destination) baseline(dflt string) (float64, bool) {
	a := d.Bandit.Arms[dflt]
	if a == nil || a.Real.W == 0 {
		return 0, false
	}
	return a.Real.Mean, true
}

// evaluate decides whether d's recommendation should change, after a
// connection in mode.
func (l *Learner) evaluate(p netip.Prefix, d *Destination, mode model.Mode) *Change {
	def := d.Bandit.Arms[l.dflt]
	if def == nil || def.Real.W < l.minDefault(p, d.Bandit, mode)-1e-9 && d.Recommended == "" {
		return nil
	}
	// Unknown algorithms are believed to be like the default until the
	// evidence says otherwise, and predictions carry the calibration.
	d.Bandit.Config.PriorMean = def.Real.Mean
	for name, a := range d.Bandit.Arms {
		a.Bias, a.ModelVar = l.bias(name, d.Loss.Mean), l.modelVar(name, d.Loss.Mean)
	}
	l.applyFleet(p, d, def.Real.Mean)
	var cands []string
	for _, a := range l.allowed {
		if a != l.dflt {
			cands = append(cands, a)
		}
	}
	margin := math.Log1p(l.cfg.MinGain)
	if cur := d.Recommended; cur != "" {
		if !slices.Contains(cands, cur) {
			return l.set(p, d, "", fmt.Sprintf("%s is no longer allowed", cur))
		}
		// A fair trial first: as many transfers on it as the default
		// needed before it was recommended.
		tried := d.Bandit.Arms[cur].Real.W >= float64(l.cfg.MinDefault)
		if pb := d.Bandit.ProbBetter(cur, l.dflt, 0); tried && pb < withdrawBelow {
			return l.set(p, d, "", fmt.Sprintf("%s no longer beats %s (P=%.2f)", cur, l.dflt, pb))
		}
		if best := d.Bandit.Best(cands); best != cur && d.Bandit.ProbBetter(best, cur, margin) >= l.cfg.Confidence {
			return l.set(p, d, best, fmt.Sprintf("%s beats %s by more than %.0f%%", best, cur, 100*l.cfg.MinGain))
		}
		return nil
	}
	cand := d.Bandit.Sample(l.rng, cands)
	if cand == "" {
		return nil
	}
	if pb := d.Bandit.ProbBetter(cand, l.dflt, margin); pb >= l.cfg.Confidence {
		post, base := d.Bandit.Posterior(cand), d.Bandit.Posterior(l.dflt)
		return l.set(p, d, cand, fmt.Sprintf("%s predicted %.1fx the goodput of %s at %.2f%% loss (P=%.3f)",
			cand, math.Exp(post.Mean-base.Mean), l.dflt, 100*d.Loss.Mean, pb))
	}
	return nil
}

func (l *Learner) set(p netip.Prefix, d *Destination, cc, reason string) *Change {
	l.backFleet(p, d, cc)
	d.Recommended = cc
	d.RecommendedAt = 0
	if cc != "" {
		d.RecommendedAt = d.Transfers
	}
	return &Change{Prefix: p, CC: cc, Reason: reason}
}

// Recommendations returns the learner's current recommendations.
func (l *Learner) Recommendations() map[netip.Prefix]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[netip.Prefix]string)
	for p, d := range l.dests {
		if d.Recommended != "" {
			out[p] = d.Recommended
		}
	}
	return out
}

// AlgorithmView is what the learner believes of one algorithm on one
// destination.
type AlgorithmView struct {
	// Goodput is the posterior mean goodput in bytes/s.
	Goodput float64 `json:"goodput"`
	// Observed counts the transfers that ran the algorithm (with
	// forgetting), Predicted the counterfactual predictions.
	Observed  float64 `json:"observed"`
	Predicted float64 `json:"predicted"`
}

// DestinationView is a summary of one destination, for status and demos.
type DestinationView struct {
	Prefix        netip.Prefix             `json:"prefix"`
	Recommended   string                   `json:"recommended,omitempty"`
	Transfers     int                      `json:"transfers"`
	RecommendedAt int                      `json:"recommended_at,omitempty"`
	Loss          float64                  `json:"loss"`
	Algorithms    map[string]AlgorithmView `json:"algorithms"`
}

// Destinations summarizes every destination, sorted by prefix.
func (l *Learner) Destinations() []DestinationView {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]DestinationView, 0, len(l.dests))
	for p, d := range l.dests {
		v := DestinationView{Prefix: p, Recommended: d.Recommended, Transfers: d.Transfers,
			RecommendedAt: d.RecommendedAt, Loss: d.Loss.Mean, Algorithms: map[string]AlgorithmView{}}
		for _, name := range d.Bandit.Names() {
			a := d.Bandit.Arms[name]
			if a.Real.W == 0 && a.Predicted.W == 0 {
				continue
			}
			v.Algorithms[name] = AlgorithmView{
				Goodput:  math.Exp(d.Bandit.Posterior(name).Mean + d.Ref),
				Observed: a.Real.W, Predicted: a.Predicted.W,
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b DestinationView) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}
