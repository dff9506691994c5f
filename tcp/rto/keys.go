package rto

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/tcp"
)

// Entries implements pipeline.Keyed: every prefix with its settings
// (FormatSettings).
func (o *Objects) Entries() ([]pipeline.Entry, error) {
	recs, err := o.Recommendations()
	out := make([]pipeline.Entry, 0, len(recs))
	for _, r := range recs {
		by := pipeline.ByLearner
		if r.Operator {
			by = pipeline.ByOperator
		}
		out = append(out, pipeline.Entry{Key: r.Prefix.String(), Value: FormatSettings(r.Settings), By: by, Generation: r.Generation})
	}
	return out, err
}

// WithdrawKey implements pipeline.Keyed: key is a prefix, or an address.
func (o *Objects) WithdrawKey(key string) (string, error) {
	p, err := tcp.ParsePrefix(key)
	if err != nil {
		return key, err
	}
	return p.String(), o.remove(p, true)
}

var _ pipeline.Keyed = (*Objects)(nil)

// pinnedKeys opens tcp/rto's pinned maps with no daemon running.
func pinnedKeys(sec config.Section, pinRoot, modelName string) (pipeline.PinnedKeys, error) {
	cfg := sec.(*SectionConfig)
	dir := loader.PinDir(pinRoot, SubsystemName, modelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return nil, fmt.Errorf("%s: no pinned maps under %s (start the model once with 'mlbpf run')", ModelPath, dir)
	}
	return Open(Config{PinRoot: pinRoot, Cgroup: cfg.Cgroup})
}
