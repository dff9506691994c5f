package model

import (
	"fmt"
	"strings"
	"time"
)

// Defaults applied to zero Options fields.
const (
	DefaultSleepTimeout    = time.Second
	DefaultLeaseFactor     = 3 // Lease = DefaultLeaseFactor × SleepTimeout
	DefaultCollabPermille  = 500
	DefaultHoldoutPermille = 50
)

// Permille is the denominator of the shares in Options and Control
// (MLBPF_PERMILLE).
const Permille = 1000

// Options are a model's options (the RFC's ml_lib_model_options), given to
// Init and ReInit. A zero field takes its default.
type Options struct {
	// SleepTimeout is the main loop period: how often the daemon renews the
	// lease, reads datasets and runs the mode controller. Default 1s.
	SleepTimeout time.Duration
	// Lease is how long the kernel trusts the control block after a
	// renewal; when it expires the appliers fall back to the default. It
	// must be longer than SleepTimeout. Default 3×SleepTimeout.
	Lease time.Duration
	// CollabPermille is the share of COLLABORATION invocations that apply
	// the recommendation; the rest form the control group. Default 500.
	CollabPermille uint32
	// HoldoutPermille is the share of RECOMMENDATION invocations kept on
	// the default, so that a regression can still be detected. Default 50.
	HoldoutPermille uint32
	// MaxMode caps promotion. Default ModeRecommendation.
	MaxMode Mode
	// InitialMode is the mode after Init and ReInit. Default ModeLearning,
	// or MaxMode if that is lower.
	InitialMode Mode
	// Controller configures the mode controller. The zero value means
	// DefaultControllerConfig; leave its MaxMode zero, MaxMode above
	// applies.
	Controller ControllerConfig
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.SleepTimeout == 0 {
		o.SleepTimeout = DefaultSleepTimeout
	}
	if o.Lease == 0 {
		o.Lease = DefaultLeaseFactor * o.SleepTimeout
	}
	if o.CollabPermille == 0 {
		o.CollabPermille = DefaultCollabPermille
	}
	if o.HoldoutPermille == 0 {
		o.HoldoutPermille = DefaultHoldoutPermille
	}
	if o.MaxMode == ModeUnknown {
		o.MaxMode = ModeRecommendation
	}
	if o.InitialMode == ModeUnknown {
		o.InitialMode = min(ModeLearning, o.MaxMode)
	}
	if o.Controller == (ControllerConfig{}) {
		o.Controller = DefaultControllerConfig()
	} else {
		o.Controller = o.Controller.withDefaults()
	}
	o.Controller.MaxMode = o.MaxMode
	return o
}

// Validate reports every problem with o, once defaults are applied, in one
// error wrapping ErrInvalidOptions; each problem names its field.
func (o Options) Validate() error {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	if o.SleepTimeout < 0 {
		add("SleepTimeout is %v, want > 0", o.SleepTimeout)
	}
	if o.Lease < 0 {
		add("Lease is %v, want > 0", o.Lease)
	}
	if o.MaxMode != ModeUnknown && !o.MaxMode.Valid() {
		add("MaxMode is %v, want EMERGENCY, LEARNING, COLLABORATION or RECOMMENDATION", o.MaxMode)
	}
	if o.InitialMode != ModeUnknown && !o.InitialMode.Valid() {
		add("InitialMode is %v, want EMERGENCY, LEARNING, COLLABORATION or RECOMMENDATION", o.InitialMode)
	}
	d := o.WithDefaults()
	if o.Controller.MaxMode != ModeUnknown && o.Controller.MaxMode != d.MaxMode {
		add("Controller.MaxMode is %v but MaxMode is %v: leave Controller.MaxMode unset", o.Controller.MaxMode, d.MaxMode)
	}
	if o.SleepTimeout >= 0 && o.Lease >= 0 && d.Lease <= d.SleepTimeout {
		add("Lease %v is not longer than SleepTimeout %v: the kernel would fall back between renewals", d.Lease, d.SleepTimeout)
	}
	if d.CollabPermille > Permille {
		add("CollabPermille is %d, want at most %d", d.CollabPermille, Permille)
	}
	if d.HoldoutPermille > Permille {
		add("HoldoutPermille is %d, want at most %d", d.HoldoutPermille, Permille)
	}
	if d.MaxMode.Valid() && d.InitialMode.Valid() && d.InitialMode > d.MaxMode {
		add("InitialMode %v is above MaxMode %v", d.InitialMode, d.MaxMode)
	}
	if o.Controller != (ControllerConfig{}) {
		c := o.Controller
		c.MaxMode = ModeUnknown
		probs = append(probs, c.problems("Controller.")...)
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(probs, "; "))
	}
	return nil
}

// RunConfig is the RFC's ml_lib_model_run_config, given to Start: it
// corrects the options for one start/stop run. A zero field keeps the
// option.
type RunConfig struct {
	// SleepTimeout overrides Options.SleepTimeout for this run (and the
	// lease, when the options left it to its default).
	SleepTimeout time.Duration
}

// Validate checks the run configuration on its own.
func (c RunConfig) Validate() error {
	if c.SleepTimeout < 0 {
		return fmt.Errorf("%w: RunConfig.SleepTimeout is %v, want > 0", ErrInvalidOptions, c.SleepTimeout)
	}
	return nil
}

// apply returns the raw options corrected by the run config.
func (c RunConfig) apply(o Options) Options {
	if c.SleepTimeout > 0 {
		o.SleepTimeout = c.SleepTimeout
	}
	return o
}
