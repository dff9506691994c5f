package synthetic

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Entries implements pipeline.Keyed: every key with its value, in key
// order.
// The map does not say who wrote an entry; the daemon does.
func (s *Objects) Entries() ([]pipeline.Entry, error) {
	type entry struct {
		k uint32
		v synthSynthRecommendation
	}
	var (
		es []entry
		e  entry
	)
	it := s.objs.Recommend.Iterate()
	for it.Next(&e.k, &e.v) {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(a.k, b.k) })
	out := make([]pipeline.Entry, len(es))
	for i, e := range es {
		out[i] = pipeline.Entry{Key: strconv.FormatUint(uint64(e.k), 10), Value: strconv.FormatUint(uint64(e.v.Value), 10), Generation: e.v.Generation}
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("listing recommendations: %w", err)
	}
	return out, nil
}

// WithdrawKey implements pipeline.Keyed.
func (s *Objects) WithdrawKey(key string) (string, error) {
	k, _, err := s.ParseRecommendation(key, "0")
	if err != nil {
		return key, err
	}
	return strconv.FormatUint(uint64(k), 10), s.Forget(k)
}

var _ pipeline.Keyed = (*Objects)(nil)

// pinnedKeys opens a synthetic model's pinned maps with no daemon running.
func pinnedKeys(sec config.Section, pinRoot, modelName string) (pipeline.PinnedKeys, error) {
	cfg := *sec.(*Config)
	cfg.PinRoot, cfg.Model = pinRoot, modelName
	dir := loader.PinDir(pinRoot, Name, modelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return nil, fmt.Errorf("%s/%s: no pinned maps under %s (start the model once with 'mlbpf run')", Name, modelName, dir)
	}
	return Open(cfg)
}
