package tcp

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/mlbpf/mlbpf/config"
)

// Reconfigure implements pipeline.Reconfigurer: a reloaded section may
// change the allow-list live (the learner withdraws what it recommended
// that is no longer allowed, and may try what now is; an operator's
// recommendations stay as they are); the rest of the section applies at
// the next start.
func (s *Objects) Reconfigure(old, next config.Section) (func(), error) {
	o, n := *old.(*Config), *next.(*Config)
	n.Allowed = o.Allowed
	if !reflect.DeepEqual(o, n) {
		return nil, fmt.Errorf("only allowed applies live; cgroup, default, passive, rate_probe, learn, portion_bytes and ring_bytes apply at start")
	}
	available, err := Available()
	if err != nil {
		return nil, err
	}
	allowed, err := resolveAllowed(next.(*Config).Allowed, available, s.cfg.Default)
	if err != nil {
		return nil, err
	}
	return func() {
		s.mu.Lock()
		s.cfg.Allowed = allowed
		s.mu.Unlock()
		s.learner.SetAllowed(allowed)
		s.cfg.Logger.Info("allow-list changed", "model", ModelPath, "allowed", allowed)
	}, nil
}

// SetAllowed changes the algorithms the learner chooses among: a
// destination's recommendation no longer allowed is withdrawn at its next
// evaluation.
func (l *Learner) SetAllowed(allowed []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.allowed = slices.Clone(allowed)
}
