package tcp

import (
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Entries implements pipeline.Keyed: every prefix with its algorithm.
func (s *Objects) Entries() ([]pipeline.Entry, error) {
	recs, err := s.Recommendations()
	out := make([]pipeline.Entry, 0, len(recs))
	for _, r := range recs {
		out = append(out, pipeline.Entry{Key: r.Prefix.String(), Value: r.CC, By: by(r.Operator), Generation: r.Generation})
	}
	return out, err
}

// WithdrawKey implements pipeline.Keyed: key is a prefix, or an address.
func (s *Objects) WithdrawKey(key string) (string, error) {
	p, err := ParsePrefix(key)
	if err != nil {
		return key, err
	}
	return p.String(), s.Withdraw(p)
}

// by says who wrote an entry, from its operator flag.
func by(operator bool) string {
	if operator {
		return pipeline.ByOperator
	}
	return pipeline.ByLearner
}

// pinnedKeys opens tcp/cc's pinned maps with no daemon running.
func pinnedKeys(sec config.Section, pinRoot, _ string) (pipeline.PinnedKeys, error) {
	cfg := *sec.(*Config)
	cfg.PinRoot = pinRoot
	return OpenPinned(cfg) // no StateDir: the daemon's learner state is left alone
}

var _ pipeline.Keyed = (*Objects)(nil)
