package pipeline

import (
	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/model"
)

// FleetLearner is a Learner that shares what it learns with a fleet of
// hosts (package fleet): it exports its sufficient statistics per key and
// arm, and takes the fleet's as a prior. The daemon calls both from its
// own goroutine, concurrently with Learn.
//
// The prior may speed up the learner's choice, never more: the learner
// caps it, trusts its own measurements over it, and the mode controller
// sees only the host's own outcomes (Result.Feedback), so a model is
// promoted on the host's own randomised evidence alone.
type FleetLearner interface {
	// FleetExport appends the statistics of the keys that changed since
	// the last call.
	FleetExport(out []fleet.Stats) []fleet.Stats
	// FleetMerge replaces the fleet's prior for key, the other hosts'
	// statistics pooled and discounted by age; nil forgets it.
	FleetMerge(key string, prior []fleet.Arm)
}

// FleetHinter is a FleetLearner that tells the mode controller what the
// fleet claims of the recommendations standing on the host
// (model.FleetHint): the loop hands its hint to the controller before
// each decision. The hint decides when the controller looks at the host's
// own randomised outcomes, never what they prove.
type FleetHinter interface {
	FleetHint() model.FleetHint
}

// hintFleet hands the learner's fleet hint to the mode controller.
func (l *Loop) hintFleet() {
	h, ok := l.Fleet().(FleetHinter)
	if c := l.m.Controller(); ok && c != nil {
		c.SetFleetHint(h.FleetHint())
	}
}

// Fleet returns the model's learner as a FleetLearner, nil if it does not
// share.
func (l *Loop) Fleet() FleetLearner {
	if t, ok := l.core.(interface{ fleetLearner() FleetLearner }); ok {
		return t.fleetLearner()
	}
	return nil
}

func (t *typed[R]) fleetLearner() FleetLearner {
	f, _ := t.learner.(FleetLearner)
	return f
}
