package rto

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
)

// A recommendation, as the model's operations and the CLI see it: Key a
// destination prefix ("10.0.0.0/8", "2001:db8::/32", or an address), Value
// a setting ("syn=20ms,rto_min=8ms", "default") or, for the learner's
// exploration, several separated by ';'.

// ParseRecommendation parses and validates a recommendation at tick rate
// hz (0: 250): the prefix and the settings the map will hold.
func ParseRecommendation(rec model.Recommendation, hz int) (netip.Prefix, []Setting, error) {
	p, err := tcp.ParsePrefix(rec.Key)
	if err != nil {
		return p, nil, err
	}
	var out []Setting
	for part := range strings.SplitSeq(rec.Value, ";") {
		s, err := ParseSetting(part)
		if err != nil {
			return p, nil, err
		}
		if err := s.Validate(hz); err != nil {
			return p, nil, fmt.Errorf("%w: %w", model.ErrInvalidRecommendation, err)
		}
		out = append(out, s)
	}
	if len(out) > MaxCandidates {
		return p, nil, fmt.Errorf("%w: %d settings, at most %d", model.ErrInvalidRecommendation, len(out), MaxCandidates)
	}
	return p, out, nil
}

// FormatSettings is the Value of a recommendation of settings.
func FormatSettings(ss []Setting) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, ";")
}

// ParseRecommendArgs parses the arguments of
//
//	mlbpf recommend tcp/rto <prefix> <setting>
//
// and validates them at tick rate hz (0: 250).
func ParseRecommendArgs(args []string, hz int) (netip.Prefix, Setting, error) {
	if len(args) != 3 {
		return netip.Prefix{}, Setting{}, fmt.Errorf("%w: want 3 arguments, model prefix setting (mlbpf recommend %s 10.0.0.0/8 syn=20ms,rto_min=8ms), got %d",
			model.ErrInvalidRecommendation, ModelPath, len(args))
	}
	if args[0] != ModelPath {
		return netip.Prefix{}, Setting{}, fmt.Errorf("%w: model %q: this parser handles %s", model.ErrInvalidRecommendation, args[0], ModelPath)
	}
	p, ss, err := ParseRecommendation(model.Recommendation{Key: args[1], Value: args[2]}, hz)
	if err != nil {
		return p, Setting{}, err
	}
	if len(ss) != 1 {
		return p, Setting{}, fmt.Errorf("%w: an operator recommends one setting, not %d", model.ErrInvalidRecommendation, len(ss))
	}
	return p, ss[0], nil
}

// The model's operations on the objects (model.ModelOps over
// model.GenericModelOps): Start and Stop attach and detach the program,
// PreprocessRecommendation parses and validates, ApplyRecommendation
// writes the map as the learner (never over an operator's entry).

// Start implements model.ModelOps: it attaches the program.
func (o *Objects) Start(*model.Model, model.RunConfig) error { return o.Attach() }

// Stop implements model.ModelOps: it saves the learner's state (on the
// period loop with a state directory). The program stays attached: on a
// STOPPED model it leaves every socket on the kernel's defaults, and the
// next Start adopts the pinned link.
func (o *Objects) Stop(*model.Model) error {
	if o.learner == nil || o.statePath == "" {
		return nil
	}
	return o.learner.Save(o.statePath)
}

// CorrectSystemState implements model.ModelOps: it applies the mode
// decision (EstimateSystemState), then, while the learner sets the mode,
// sizes RECOMMENDATION's holdout by what it costs the chosen settings'
// tail (Learner.Holdout), at most the configured share. An external
// learner's model keeps the configured share.
func (o *Objects) CorrectSystemState(m *model.Model) (model.Decision, error) {
	d, err := o.GenericModelOps.CorrectSystemState(m)
	if err != nil || o.learner == nil || o.external {
		return d, err
	}
	h, why := o.learner.Holdout(m.Options().HoldoutPermille)
	return d, m.NarrowHoldout(h, ModelPath+": "+why)
}

// PreprocessRecommendation implements model.ModelOps.
func (o *Objects) PreprocessRecommendation(m *model.Model, rec *model.Recommendation) error {
	if err := (model.GenericModelOps{}).PreprocessRecommendation(m, rec); err != nil {
		return err
	}
	p, ss, err := ParseRecommendation(*rec, o.hz)
	if err != nil {
		return err
	}
	rec.Key, rec.Value = p.String(), FormatSettings(ss)
	return nil
}

// ApplyRecommendation implements model.ModelOps: the learner's write.
func (o *Objects) ApplyRecommendation(_ *model.Model, rec model.Recommendation) error {
	p, ss, err := ParseRecommendation(rec, o.hz)
	if err != nil {
		return err
	}
	if len(ss) == 1 && ss[0] == Default {
		return o.remove(p, false)
	}
	return o.write(p, ss, false)
}

// RecommendOperator writes an operator's recommendation, already
// preprocessed; the learner never overwrites it.
func (o *Objects) RecommendOperator(rec model.Recommendation) error {
	p, ss, err := ParseRecommendation(rec, o.hz)
	if err != nil {
		return err
	}
	return o.write(p, ss, true)
}

// WithdrawLearned removes the learner's recommendation for a prefix,
// leaving an operator's.
func (o *Objects) WithdrawLearned(key string) error {
	p, err := tcp.ParsePrefix(key)
	if err != nil {
		return err
	}
	return o.remove(p, false)
}

// Lost is the per-CPU count of records the program could not reserve.
func (o *Objects) Lost() *ebpf.Map { return o.objs.Lost }

var _ model.ModelOps = (*Objects)(nil)
