package tcp

import (
	"math"
	"net/netip"

	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// fleetMaxWeight caps the fleet's evidence on one arm of one prefix: at
// most as much as this many of the host's own transfers, however many
// hosts report, so that a few of the host's own transfers can overrule
// it.
const fleetMaxWeight = 20

// fleetDisagree is how many standard errors apart (or below, for the
// fleet's hint: overrules) the host's own mean reward on an arm and the
// fleet's claim may be before the host trusts its own alone.
const fleetDisagree = 2.0

// FleetExport implements pipeline.FleetLearner: per destination prefix
// learned from since the last call, every arm's rewards, predictions
// (both as log goodput relative to the host's default on that prefix, so
// that hosts with different paths compare) and the calibration of its
// predictions.
func (l *Learner) FleetExport(out []fleet.Stats) []fleet.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.fleetDirty {
		delete(l.fleetDirty, p)
		d := l.dests[p]
		if d == nil {
			continue
		}
		base, ok := d.baseline(l.dflt)
		if !ok {
			continue
		}
		st := fleet.Stats{Key: p.String()}
		for _, name := range d.Bandit.Names() {
			a := d.Bandit.Arms[name]
			if a.Real.W == 0 && a.Predicted.W == 0 {
				continue
			}
			fa := fleet.Arm{Name: name, Real: shift(a.Real, -base), Predicted: shift(a.Predicted, -base)}
			if e := l.calib[name]; e != nil {
				fa.Error = *e
			}
			st.Arms = append(st.Arms, fa)
			if len(st.Arms) == fleet.MaxArms {
				break
			}
		}
		if len(st.Arms) > 0 {
			out = append(out, st)
		}
	}
	return out
}

func shift(e learner.Estimate, by float64) learner.Estimate {
	if e.W > 0 {
		e.Mean += by
	}
	return e
}

// FleetMerge implements pipeline.FleetLearner: the prior is kept apart
// from the host's own evidence (never saved with it) and weighed at each
// decision (applyFleet).
func (l *Learner) FleetMerge(key string, prior []fleet.Arm) {
	p, err := netip.ParsePrefix(key)
	if err != nil || p != p.Masked() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fleet == nil {
		l.fleet = map[netip.Prefix]map[string]learner.Estimate{}
	}
	if len(prior) == 0 {
		delete(l.fleet, p)
		return
	}
	m := make(map[string]learner.Estimate, len(prior))
	for _, a := range prior {
		if a.Name == l.dflt || a.Real.W <= 0 {
			continue // the host's own default is its baseline
		}
		e := a.Real
		if e.W > fleetMaxWeight {
			e.S *= fleetMaxWeight / e.W
			e.W = fleetMaxWeight
		}
		m[a.Name] = e
	}
	l.fleet[p] = m
}

// applyFleet sets every arm's prior from the fleet's evidence on p,
// moved onto the host's scale (relative to its own default), while
// nothing is recommended for p: the fleet may speed up the first choice,
// but a standing recommendation changes on the host's own evidence only.
// An arm where the host's own evidence disagrees with the fleet's claim,
// either way, gets no prior, then or ever after (until the daemon
// restarts): which arm is tried first is the host's own call as soon as
// it has evidence of its own.
func (l *Learner) applyFleet(p netip.Prefix, d *Destination, base float64) {
	prior := l.fleet[p]
	b := d.Bandit
	for name, a := range b.Arms {
		a.Prior = learner.Estimate{}
		e, ok := prior[name]
		if !ok || d.Recommended != "" || l.fleetOverruled[fleetArm{p, name}] {
			continue
		}
		e.Mean += base
		if !l.overrules(p, name, b, a, e, false) {
			a.Prior = e
		}
	}
	// A standing recommendation the fleet backed (FleetHint) stays backed
	// until the host's own evidence refutes the claim (says the arm is
	// worse than claimed).
	if fb, ok := l.fleetBacked[p]; ok {
		a := b.Arms[fb.arm]
		e := fb.claim
		e.Mean += base
		if fb.arm != d.Recommended || a == nil || l.overrules(p, fb.arm, b, a, e, true) {
			delete(l.fleetBacked, p)
		}
	}
}

// overrules reports whether the host's own evidence on arm a (name) of p
// disagrees with the fleet's claim e (on the host's scale), and if so
// marks the claim overruled, for good: the arm's fair trial (MinDefault
// transfers), or else as many predictions of the host's own calibrated
// counterfactual model, more than fleetDisagree standard errors (the
// arm's, the claim's and the host's default mean's) from it, or,
// refuteOnly, below it.
//
// The prior (which arm is tried first) is overruled either way: a claim
// that an arm is worse than the host finds it would otherwise let a
// hostile publisher hide the good arm behind a harmful one it claims
// subtly. The fleet's hint on a standing recommendation (FleetHint) is
// overruled only when the host finds the arm worse than claimed
// (refuteOnly): the hint only times the mode controller's own tests,
// designed for the claimed effect, which a larger true effect passes
// sooner; and the host's counterfactual predictions, not yet calibrated
// on its own split, over-predict a rate-based algorithm on a lossy path,
// which made a two-sided check withdraw true claims.
func (l *Learner) overrules(p netip.Prefix, name string, b *learner.Bandit, a *learner.Arm, e learner.Estimate, refuteOnly bool) bool {
	enough := float64(l.cfg.MinDefault)
	var own, v float64
	switch {
	case l.fleetOverruled[fleetArm{p, name}]:
		return true
	case a.Real.W >= enough:
		own, v = a.Real.Mean, b.Noise(a.Real)/a.Real.W
	case a.Predicted.W >= enough:
		own, v = a.Predicted.Mean+a.Bias, b.Noise(a.Predicted)/a.Predicted.W+a.ModelVar
	default:
		return false
	}
	gap := e.Mean - own // how much worse the arm is on the host than claimed
	if !refuteOnly {
		gap = math.Abs(gap)
	}
	// The claim is on the host's scale through the host's own default
	// mean, as uncertain as the host's own mean on the arm: a join
	// measures both from a few transfers each.
	if def := b.Arms[l.dflt]; def != nil && def.Real.W > 0 {
		v += b.Noise(def.Real) / def.Real.W
	}
	if gap <= fleetDisagree*math.Sqrt(v+b.Noise(e)/e.W) {
		return false
	}
	if l.fleetOverruled == nil {
		l.fleetOverruled = map[fleetArm]bool{}
	}
	l.fleetOverruled[fleetArm{p, name}] = true
	return true
}

// fleetMinDefault is the number of transfers on the default a prefix
// needs before the fleet's prior may make the first choice for it (the
// host's own baseline, which the prior is moved onto), instead of
// LearnConfig.MinDefault. One: the prior is relative to the default, so
// the baseline's level does not change which arm the claim favours, and
// the host's own predictions cannot overrule a claim before MinDefault
// transfers anyway; a second transfer only gave FleetHint the host's own
// spread on the default, which sizes the controller's test but does not
// make it valid (the test's α is the model's, whatever the hint).
const fleetMinDefault = 1

// minDefault returns the weight of default transfers p needs before
// anything is recommended for it: MinDefault, or the weight of
// fleetMinDefault transfers (less their forgetting) while the fleet has a
// claim on p the host has not overruled and the model is in LEARNING. In
// LEARNING the recommendation is only looked up, and the fleet's claim is
// tried on probation (model.FleetHint), once in the model's life. In
// COLLABORATION and RECOMMENDATION a recommendation is applied at once,
// so a new prefix waits for MinDefault, which gives the host's own
// counterfactual model its say on the fleet's claim first.
func (l *Learner) minDefault(p netip.Prefix, b *learner.Bandit, mode model.Mode) float64 {
	if mode == model.ModeLearning && l.cfg.MinDefault > fleetMinDefault {
		for name := range l.fleet[p] {
			if !l.fleetOverruled[fleetArm{p, name}] {
				return 1 + b.Config.Discount*(fleetMinDefault-1)
			}
		}
	}
	return float64(l.cfg.MinDefault)
}

// backedClaim is the fleet's claim on the arm recommended for a prefix,
// as it was when the recommendation was made: the prior, relative to
// the default.
type backedClaim struct {
	arm   string
	claim learner.Estimate
}

// backFleet records, when cc is recommended for p, whether the fleet's
// prior helped choose it.
func (l *Learner) backFleet(p netip.Prefix, d *Destination, cc string) {
	delete(l.fleetBacked, p)
	a := d.Bandit.Arms[cc]
	e, ok := l.fleet[p][cc]
	if cc == "" || a == nil || a.Prior.W <= 0 || !ok {
		return
	}
	if l.fleetBacked == nil {
		l.fleetBacked = map[netip.Prefix]backedClaim{}
	}
	l.fleetBacked[p] = backedClaim{arm: cc, claim: e}
}

// FleetHint returns what the fleet claims of the recommendations that
// stand (model.FleetHint): while every one of them was chosen with the
// fleet's prior, and the host's own evidence has not overruled it, the
// smallest claimed lift over the default (on the mode controller's reward
// scale, log goodput) and the largest spread of one transfer's reward,
// claimed or the host's own on its default, never below the learner's
// assumed noise. The zero hint otherwise.
func (l *Learner) FleetHint() model.FleetHint {
	l.mu.Lock()
	defer l.mu.Unlock()
	var h model.FleetHint
	for p, d := range l.dests {
		if d.Recommended == "" {
			continue
		}
		fb, ok := l.fleetBacked[p]
		if !ok || fb.claim.Mean <= 0 {
			return model.FleetHint{}
		}
		b := d.Bandit
		sd := math.Sqrt(max(b.Noise(fb.claim), b.Config.NoiseVar))
		if def := b.Arms[l.dflt]; def != nil {
			sd = max(sd, math.Sqrt(b.Noise(def.Real)))
		}
		if h.Effect == 0 || fb.claim.Mean < h.Effect {
			h.Effect = fb.claim.Mean
		}
		h.StdDev = max(h.StdDev, sd)
	}
	return h
}

// fleetArm is an arm on a prefix.
type fleetArm struct {
	p   netip.Prefix
	arm string
}

func (l *Learner) markFleet(p netip.Prefix) {
	if l.fleetDirty == nil {
		l.fleetDirty = map[netip.Prefix]bool{}
	}
	l.fleetDirty[p] = true
}

// FleetOverruled counts the arms of prefixes where the host's own
// evidence overruled the fleet's.
func (l *Learner) FleetOverruled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.fleetOverruled)
}

// FleetExport and FleetMerge make tcp/cc's loop learner a
// pipeline.FleetLearner.
func (l learn) FleetExport(out []fleet.Stats) []fleet.Stats { return l.s.learner.FleetExport(out) }
func (l learn) FleetMerge(key string, prior []fleet.Arm)    { l.s.learner.FleetMerge(key, prior) }
func (l learn) FleetHint() model.FleetHint                  { return l.s.learner.FleetHint() }

var (
	_ pipeline.FleetLearner = learn{}
	_ pipeline.FleetHinter  = learn{}
)
