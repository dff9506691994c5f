package tcp

import (
	"math"
	"net/netip"

	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/pipeline"
)

// fleetMaxWeight caps the fleet's evidence on one arm of one prefix: at
// most as much as this many of the host's own transfers, however many
// hosts report, so that a few of the host's own transfers can overrule
// it.
const fleetMaxWeight = 20

// fleetDisagree is how many standard errors apart the host's own mean
// reward on an arm and the fleet's may be before the host trusts its own
// alone.
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
// An arm where the host's own evidence disagrees with the fleet's gets no
// prior, then or ever after (until the daemon restarts): its fair trial
// (MinDefault transfers), or else as many predictions of its own
// counterfactual model, calibrated.
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
		enough := float64(l.cfg.MinDefault)
		var own, v float64
		switch {
		case a.Real.W >= enough:
			own, v = a.Real.Mean, b.Noise(a.Real)/a.Real.W
		case a.Predicted.W >= enough:
			own, v = a.Predicted.Mean+a.Bias, b.Noise(a.Predicted)/a.Predicted.W+a.ModelVar
		default:
			a.Prior = e
			continue
		}
		if math.Abs(own-e.Mean) > fleetDisagree*math.Sqrt(v+b.Noise(e)/e.W) {
			if l.fleetOverruled == nil {
				l.fleetOverruled = map[fleetArm]bool{}
			}
			l.fleetOverruled[fleetArm{p, name}] = true
			continue
		}
		a.Prior = e
	}
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

var _ pipeline.FleetLearner = learn{}
