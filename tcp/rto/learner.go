package rto

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"

	"github.com/mlbpf/mlbpf/model"
)

// LearnConfig tunes the Learner. Zero fields take the defaults.
type LearnConfig struct {
	// Grid is the ordered grid of settings, Grid[0] the default (default
	// the package's Grid).
	Grid []Setting
	// Quantile sets the tail minimised (default 0.9): the mean flow
	// completion time of the worst 1-Quantile of the flows but the worst
	// 1 % (expected shortfall), not the mean of all, since a wrong timer
	// costs whole timeouts.
	Quantile float64
	// Z is the normal quantile of the confidence bounds of that tail mean
	// (default 1.645: one-sided 95 %).
	Z float64
	// MinGain is how much shorter than the default's a setting's tail
	// must be, relatively, for the learner to choose it (default 0.1):
	// a setting takes the timers' risk (spurious timeouts), which a cut
	// within the noise of a few dozen flows' tail does not pay for.
	MinGain float64
	// MinSamples is how many flows each arm needs before a prefix decides
	// (default 40).
	MinSamples int
	// MaxFlows: a prefix decides on what it has after this many flows
	// (default 300).
	MaxFlows int
	// Window is how many recent flows per arm are kept (default 400).
	Window int
	// Bits4 and Bits6 are the prefix lengths destinations are grouped by
	// (default 24 and 64).
	Bits4, Bits6 int
}

func (c LearnConfig) withDefaults() LearnConfig {
	if len(c.Grid) == 0 {
		c.Grid = Grid
	}
	if c.Quantile == 0 {
		c.Quantile = 0.9
	}
	if c.Z == 0 {
		c.Z = 1.645
	}
	if c.MinGain == 0 {
		c.MinGain = 0.1
	}
	if c.MinSamples == 0 {
		c.MinSamples = 40
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = 300
	}
	if c.Window == 0 {
		c.Window = 400
	}
	if c.Bits4 == 0 {
		c.Bits4 = 24
	}
	if c.Bits6 == 0 {
		c.Bits6 = 64
	}
	return c
}

// Validate checks the configuration.
func (c LearnConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Grid[0] != Default:
		return fmt.Errorf("grid: the first setting must be the default, not %s", c.Grid[0])
	case len(c.Grid) < 2 || len(c.Grid)-1 > MaxCandidates:
		return fmt.Errorf("grid: %d settings, want 2 to %d", len(c.Grid), MaxCandidates+1)
	case c.MinGain < 0 || c.MinGain >= 1:
		return fmt.Errorf("min gain %g out of [0, 1)", c.MinGain)
	case c.Quantile <= 0 || c.Quantile >= 1:
		return fmt.Errorf("quantile %g out of (0, 1)", c.Quantile)
	case c.MinSamples < 5 || c.MaxFlows < c.MinSamples:
		return fmt.Errorf("min samples %d, max flows %d: want 5 <= min samples <= max flows", c.MinSamples, c.MaxFlows)
	case c.Bits4 < 0 || c.Bits4 > 32 || c.Bits6 < 0 || c.Bits6 > 128:
		return fmt.Errorf("prefix lengths /%d and /%d out of range", c.Bits4, c.Bits6)
	}
	return nil
}

// Destination is what the learner knows of one prefix.
type Destination struct {
	Prefix netip.Prefix `json:"prefix"`
	// Flows counts the flows seen; LearnedAfter the flows seen when it
	// first decided (0 while exploring).
	Flows        int `json:"flows"`
	LearnedAfter int `json:"learned_after"`
	// Chosen is the grid index in force, -1 while exploring.
	Chosen  int       `json:"chosen"`
	Setting Setting   `json:"setting"`
	Arms    []ArmView `json:"arms"`

	fct     [][]float64 // per grid index, ms, the last Window flows
	dropped []bool      // per grid index, settings no longer explored
}

// ArmView summarises one grid setting's flows at a prefix.
type ArmView struct {
	Setting Setting `json:"setting"`
	Flows   int     `json:"flows"`
	// Q is the mean flow completion time of the worst 1-Quantile of the
	// flows but the worst 1 %, with its confidence bounds, in ms.
	Q     float64 `json:"tail_ms"`
	QLow  float64 `json:"tail_low_ms"`
	QHigh float64 `json:"tail_high_ms"`
}

// Learner chooses a grid setting per prefix; safe for concurrent use.
type Learner struct {
	cfg   LearnConfig
	mu    sync.Mutex
	dests map[netip.Prefix]*Destination
	seen  func(*Flow)
}

// OnFlow sets a function that sees every flow the learner is given,
// before it learns from it (for demos and benchmarks: the records as the
// model's loop decoded them).
func (l *Learner) OnFlow(fn func(*Flow)) {
	l.mu.Lock()
	l.seen = fn
	l.mu.Unlock()
}

// NewLearner returns a learner; cfg must be valid (Validate).
func NewLearner(cfg LearnConfig) *Learner {
	return &Learner{cfg: cfg.withDefaults(), dests: map[netip.Prefix]*Destination{}}
}

// Config is the effective configuration.
func (l *Learner) Config() LearnConfig { return l.cfg }

// PrefixOf is the prefix a peer is learned under.
func (l *Learner) PrefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := l.cfg.Bits6
	if a.Is4() {
		bits = l.cfg.Bits4
	}
	p, _ := a.Prefix(bits)
	return p
}

// armOf maps a flow to the grid index whose outcome it is, or -1: a flow
// on any arm but MODEL ran the kernel's defaults, so it is an outcome of
// the default setting; a MODEL flow is its setting's if that is in the
// grid (an operator's may not be). REJECTED flows say nothing of a
// setting.
func (l *Learner) armOf(f *Flow) int {
	switch f.Arm {
	case model.ArmModel:
		return slices.Index(l.cfg.Grid, f.Setting)
	case model.ArmRejected:
		return -1
	default:
		return 0
	}
}

// Observe learns from one flow. It returns the flow's feedback for the
// model (error backpropagation and the shared mode controller's
// evidence), ok false for a flow that says nothing of a setting (REJECTED,
// or a setting outside the grid).
//
// The reward is the flow's completion time relative to the mean of the
// default's flows at its prefix, negated: -1 is "as long as the
// default's flows", -0.5 half as long, on every prefix alike, so that
// the controller can pool the prefixes' outcomes and its relative
// MinEffect reads as a relative cut of the mean completion time. The mean,
// not a quantile: the controller compares means, and here the mean is
// made by the tail (a stalled flow costs whole timeouts, hundreds of
// times a fast flow). Until the prefix has a default flow the flow is its
// own baseline (-1); a reward is clipped at -MaxReward, so that a
// prefix's first default flows, if all fast, do not give one stall the
// weight of thousands of flows.
func (l *Learner) Observe(f *Flow) (fb model.Feedback, ok bool) {
	l.mu.Lock()
	seen := l.seen
	l.mu.Unlock()
	if seen != nil {
		seen(f)
	}
	arm := l.armOf(f)
	if arm < 0 {
		return fb, false
	}
	p := l.PrefixOf(f.Peer)
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dests[p]
	if d == nil {
		d = &Destination{Prefix: p, Chosen: -1, fct: make([][]float64, len(l.cfg.Grid)), dropped: make([]bool, len(l.cfg.Grid))}
		l.dests[p] = d
	}
	ms := float64(f.FCT) / 1e6
	fb = model.Feedback{Arm: f.Arm, Reward: -1, Key: p.String(), Value: f.Setting.String(),
		Mode: f.Mode, Generation: f.Generation}
	if base := mean(d.fct[0]); base > 0 {
		fb.Reward = -min(ms/base, MaxReward)
	}
	d.Flows++
	s := append(d.fct[arm], ms)
	if len(s) > l.cfg.Window {
		s = s[len(s)-l.cfg.Window:]
	}
	d.fct[arm] = s
	l.decide(d)
	return fb, true
}

// MaxReward bounds a flow's reward: a flow MaxReward times as long as
// the default's mean counts as that.
const MaxReward = 20

func mean(xs []float64) float64 {
	var m float64
	for _, x := range xs {
		m += x
	}
	if len(xs) == 0 {
		return 0
	}
	return m / float64(len(xs))
}

// tail returns the mean of the worst (1-q) share of xs, leaving out the
// worst 1 % (at least one flow), and its confidence bounds, mean ± z
// standard errors of that mean. It is the risk of a setting, whose bad
// flows cost whole timeouts (the expected shortfall, or CVaR, at level
// q): unlike the q-quantile itself it does not jump when q falls between
// the fast flows and the stalled ones of a bimodal distribution. The
// worst 1 % are left out because the p99 a setting is judged by does not
// see them either, and among the few dozen flows of a first choice a
// single outlier (a flow stalled for a reason no timer setting has)
// would otherwise decide between two settings.
func tail(xs []float64, q, z float64) (est, lo, hi float64) {
	n := len(xs)
	if n == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := max(int(math.Ceil(float64(n)*(1-q))), 2)
	drop := min(int(math.Ceil(float64(n)*0.01)), k-2)
	t := s[max(n-k, 0) : n-drop]
	var m, v float64
	for _, x := range t {
		m += x
	}
	m /= float64(len(t))
	for _, x := range t {
		v += (x - m) * (x - m)
	}
	se := 0.0
	if len(t) > 1 {
		se = math.Sqrt(v/float64(len(t)-1)) / math.Sqrt(float64(len(t)))
	}
	return m, m - z*se, m + z*se
}

// decide chooses once every setting still explored has MinSamples flows,
// racing the settings against the default and each other (its tail's
// bounds, tail, as evidence):
//
//   - a setting is a candidate when its tail's upper bound is below the
//     default's lower bound and its tail is MinGain below the default's;
//   - it is dropped (no longer explored) when even its lower bound is
//     not MinGain below the default's upper bound (it cannot pay), or
//     when its lower bound is above the upper bound of the candidate
//     with the lowest tail (it is beaten);
//   - that candidate is chosen when no setting is left that it is not
//     separated from; the default is kept when no setting is left at
//     all. At MaxFlows the prefix chooses on what it has: that
//     candidate, or the default if there is none.
//
// Choosing at the first look, on the four or five flows of a tail of 40,
// kept the default for 1 % of lossy prefixes (the default's tail, a few
// of its flows stalled for a second and a few not, was too uncertain to
// prove any setting better), and the second-best setting for 3 %
// (TestLearnerChoosesTheBestSetting). After that it keeps watching the
// setting in force against the default (the holdout): if the default's
// upper bound falls below the setting's lower bound, it goes back to the
// default.
func (l *Learner) decide(d *Destination) {
	c := l.cfg
	if d.Chosen < 0 {
		atMax := d.Flows >= c.MaxFlows
		ready := atMax
		if !ready {
			ready = true
			for i, s := range d.fct {
				ready = ready && (len(s) >= c.MinSamples || i > 0 && d.dropped[i])
			}
		}
		if !ready {
			return
		}
		q0, lo0, hi0 := tail(d.fct[0], c.Quantile, c.Z)
		type setting struct {
			i         int
			q, lo, hi float64
		}
		var live []setting
		best := -1
		for i := 1; i < len(d.fct); i++ {
			if d.dropped[i] || len(d.fct[i]) < c.MinSamples {
				continue
			}
			q, lo, hi := tail(d.fct[i], c.Quantile, c.Z)
			if lo > (1-c.MinGain)*hi0 {
				d.dropped[i] = true // it cannot pay
				continue
			}
			live = append(live, setting{i, q, lo, hi})
			if hi < lo0 && q <= (1-c.MinGain)*q0 && (best < 0 || q < live[best].q) {
				best = len(live) - 1
			}
		}
		if best < 0 {
			if len(live) == 0 || atMax {
				d.Chosen, d.Setting, d.LearnedAfter = 0, c.Grid[0], d.Flows
			}
			return
		}
		b := live[best]
		racing := false
		for _, o := range live {
			switch {
			case o.i == b.i:
			case o.lo > b.hi:
				d.dropped[o.i] = true // it is beaten
			default:
				racing = true
			}
		}
		if !racing || atMax {
			d.Chosen, d.Setting, d.LearnedAfter = b.i, c.Grid[b.i], d.Flows
		}
		return
	}
	if d.Chosen == 0 || len(d.fct[0]) < c.MinSamples || len(d.fct[d.Chosen]) < c.MinSamples {
		return
	}
	_, _, hi0 := tail(d.fct[0], c.Quantile, c.Z)
	if _, lo, _ := tail(d.fct[d.Chosen], c.Quantile, c.Z); hi0 < lo {
		d.Chosen, d.Setting = 0, Default
	}
}

// Recommendations returns the settings the map should hold per prefix:
// the grid's non-default settings while a prefix explores, the chosen
// setting after; a prefix that chose the default has none.
func (l *Learner) Recommendations() map[netip.Prefix][]Setting {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.Prefix][]Setting{}
	for p, d := range l.dests {
		switch {
		case d.Chosen < 0:
			for i, s := range l.cfg.Grid[1:] {
				if !d.dropped[i+1] {
					out[p] = append(out[p], s)
				}
			}
		case d.Chosen > 0:
			out[p] = []Setting{l.cfg.Grid[d.Chosen]}
		}
	}
	return out
}

// Mode is the mode the learner wants: COLLABORATION while some prefix
// explores, RECOMMENDATION once every prefix has chosen; ok is false
// while it knows no prefix (the mode stays as it is).
func (l *Learner) Mode() (mode model.Mode, why string, ok bool) {
	l.mu.Lock()
	n := len(l.dests)
	l.mu.Unlock()
	if n == 0 {
		return 0, "", false
	}
	if l.Exploring() {
		return model.ModeCollaboration, "tcp/rto: exploring the grid", true
	}
	return model.ModeRecommendation, "tcp/rto: every prefix chose its setting", true
}

// Exploring reports whether some prefix has not decided yet.
func (l *Learner) Exploring() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.dests {
		if d.Chosen < 0 {
			return true
		}
	}
	return false
}

// Destinations returns a snapshot of every prefix, sorted.
func (l *Learner) Destinations() []Destination {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Destination, 0, len(l.dests))
	for _, d := range l.dests {
		v := *d
		v.fct = nil
		v.Arms = make([]ArmView, len(d.fct))
		for i, s := range d.fct {
			v.Arms[i] = ArmView{Setting: l.cfg.Grid[i], Flows: len(s)}
			if len(s) > 0 {
				a := &v.Arms[i]
				a.Q, a.QLow, a.QHigh = tail(s, l.cfg.Quantile, l.cfg.Z)
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Destination) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}

// Holdout returns the share of RECOMMENDATION's flows to keep on the
// default, in permille, at most ceiling (the model's configured
// holdout) and at least 1 ‰, and why.
//
// The holdout's flows are the reward's tail by construction on a path
// where a setting pays: there, a default flow is often slower than
// nearly every flow of the setting. So the holdout is sized by what it
// costs the p99 of a prefix's flows: its flows beyond the chosen
// setting's p99 may make at most a fiftieth of the 1 % of flows beyond
// it (0.02 % of all flows). With a share k/n of the default's recent
// flows beyond that p99, that is n/(5k) ‰ at most; the prefix where the
// default's tail is costliest sizes the model's one share. A fiftieth,
// because a setting that pays has a cliff just above its p99: on the
// testbed's lossy path, where a fifth of the default's flows outlast the
// setting's p99 (about 49 ms) and its p99.5 is twice it, every 0.1 % of
// the flows added beyond the p99 moves it by 4 to 5 % (a 1 % holdout,
// 0.19 % of the flows, by 7 to 10 %, 5 ‰ by 2 to 5 %, 1 ‰ by under 2 %:
// three rtobench runs' dumps resampled). What a narrower holdout costs is time:
// the learner's watch on the default (decide) and the mode controller's
// demotion test gather the default's flows that much more slowly (at 1 ‰,
// 40 in 40 000 flows).
func (l *Learner) Holdout(ceiling uint32) (permille uint32, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	permille, why = ceiling, "no chosen setting's tail is costlier"
	for _, d := range l.dests {
		if d.Chosen <= 0 || len(d.fct[0]) < l.cfg.MinSamples || len(d.fct[d.Chosen]) < l.cfg.MinSamples {
			continue
		}
		p99 := quantile(d.fct[d.Chosen], 0.99)
		k := 0
		for _, ms := range d.fct[0] {
			if ms > p99 {
				k++
			}
		}
		n := len(d.fct[0])
		if k == 0 || uint32(n/(5*k)) >= permille {
			continue
		}
		permille = max(uint32(n/(5*k)), 1)
		why = fmt.Sprintf("%d of the default's last %d flows at %s outlast the p99 of %s (%.1f ms): a holdout of %d ‰ adds at most %.3f %% of the flows beyond it",
			k, n, d.Prefix, l.cfg.Grid[d.Chosen], p99, permille, float64(permille)/10*float64(k)/float64(n))
	}
	return permille, why
}

// quantile returns the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}
