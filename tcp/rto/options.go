package rto

import (
	"time"

	"github.com/mlbpf/mlbpf/model"
)

// DefaultOptions are tcp/rto's model options: it starts in COLLABORATION,
// since an RTO setting cannot be judged without applying it (no
// counterfactual: a timer that never fired says nothing of a shorter
// one), with three quarters of the flows drawing a candidate setting and
// the rest on the default. RECOMMENDATION keeps at most 1 % on the
// default, not the usual 5 %: the reward is the tail of the flow
// completion time, and on a path where the setting pays, holdout flows
// are that tail by construction; at 5 % they alone would set the p99.
// The learner narrows it further on the period loop (Learner.Holdout,
// Objects.CorrectSystemState) where the default's tail is costlier: the
// configured share is the ceiling.
func DefaultOptions() model.Options {
	return model.Options{
		SleepTimeout:    250 * time.Millisecond,
		InitialMode:     model.ModeCollaboration,
		CollabPermille:  750,
		HoldoutPermille: 10,
	}
}

// withDefaultOptions gives opts tcp/rto's initial mode and shares where
// they are zero.
func withDefaultOptions(opts model.Options) model.Options {
	d := DefaultOptions()
	if opts.InitialMode == 0 {
		opts.InitialMode = d.InitialMode
		if opts.MaxMode != 0 {
			opts.InitialMode = min(opts.InitialMode, opts.MaxMode)
		}
	}
	if opts.CollabPermille == 0 {
		opts.CollabPermille = d.CollabPermille
	}
	if opts.HoldoutPermille == 0 {
		opts.HoldoutPermille = d.HoldoutPermille
	}
	return opts
}
