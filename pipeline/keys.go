package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/model"
)

// Keyed is Objects (or a subsystem's pinned maps, Subsystem.Pinned) whose
// recommendation map an operator can list and take keys back from: 'mlbpf
// recommendations' and 'mlbpf recommend --withdraw'. Every subsystem's
// objects should implement it; a model whose objects do not says so.
type Keyed interface {
	// Entries lists the recommendation map, in the subsystem's order.
	Entries() ([]Entry, error)
	// Withdraw removes the recommendation for key, an operator's or the
	// learner's, and returns key normalized (as Entries says it). key is
	// validated as a recommendation's key is; a key with no entry is not
	// an error.
	WithdrawKey(key string) (string, error)
}

// PinnedKeys are a model's pinned recommendation map, opened with no
// daemon running.
type PinnedKeys interface {
	Keyed
	Close() error
}

// Entry is one key of a recommendation map.
type Entry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// By is who wrote it, "operator" or "learner" (an agent's counts as
	// the learner's), empty when neither the map nor the daemon knows.
	By         string `json:"by,omitempty"`
	Generation uint32 `json:"generation"`
	// Written is when the running daemon wrote it, zero when it did not
	// (written by an earlier daemon or with none running).
	Written time.Time `json:"written,omitzero"`
	// Evidence is the outcomes the daemon fed back for the key since it
	// started, per arm (the learner's evidence for its choice).
	Evidence map[string]ArmEvidence `json:"evidence,omitempty"`
}

// Who wrote an entry.
const (
	ByOperator = "operator"
	ByLearner  = "learner"
)

// ArmEvidence sums up one arm's outcomes for a key.
type ArmEvidence struct {
	N          int     `json:"n"`
	MeanReward float64 `json:"mean_reward"`
}

// ErrNotKeyed is returned for a model whose objects cannot list their
// recommendation map or withdraw a key.
var ErrNotKeyed = errors.New("the model's subsystem does not list or withdraw recommendations")

// keyStats are what the loop knows of a key beyond the map: when it
// wrote it, and the outcomes fed back for it.
type keyStats struct {
	written time.Time
	n       [model.ArmCount]int
	sum     [model.ArmCount]float64
}

// keyLocked returns key's stats, creating them. Under l.mu.
func (l *Loop) keyLocked(key string) *keyStats {
	k := l.keys[key]
	if k == nil {
		k = &keyStats{}
		l.keys[key] = k
	}
	return k
}

// wrote records that the loop wrote key now. Under l.mu.
func (l *Loop) wroteLocked(key string) { l.keyLocked(key).written = time.Now() }

// evidenceLocked adds an outcome for its key. Under l.mu.
func (l *Loop) evidenceLocked(fb model.Feedback) {
	if fb.Key == "" || fb.Arm >= model.ArmCount {
		return
	}
	k := l.keyLocked(fb.Key)
	k.n[fb.Arm]++
	k.sum[fb.Arm] += fb.Reward
}

func (l *Loop) keyed() (Keyed, error) {
	k, ok := l.obj.(Keyed)
	if !ok {
		return nil, fmt.Errorf("%s: %w", l.name, ErrNotKeyed)
	}
	return k, nil
}

// Recommendations lists the model's recommendation map, every key with
// who wrote it, when, and the outcomes fed back for it.
func (l *Loop) Recommendations() ([]Entry, error) {
	k, err := l.keyed()
	if err != nil {
		return nil, err
	}
	es, err := k.Entries()
	if err != nil {
		return nil, fmt.Errorf("%s: listing recommendations: %w", l.name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range es {
		e := &es[i]
		if l.operator[e.Key] {
			e.By = ByOperator
		} else if e.By == "" {
			e.By = ByLearner
		}
		ks := l.keys[e.Key]
		if ks == nil {
			continue
		}
		e.Written = ks.written
		for a, n := range ks.n {
			if n == 0 {
				continue
			}
			if e.Evidence == nil {
				e.Evidence = map[string]ArmEvidence{}
			}
			e.Evidence[model.Arm(a).String()] = ArmEvidence{N: n, MeanReward: ks.sum[a] / float64(n)}
		}
	}
	return es, nil
}

// Withdraw removes the recommendation for key, an operator's or the
// learner's, validated as a recommendation's key is, and returns the key
// normalized. An operator's withdrawal of a learned key stands until the
// learner changes its mind again.
func (l *Loop) Withdraw(key string) (string, error) {
	k, err := l.keyed()
	if err != nil {
		return key, err
	}
	norm, err := k.WithdrawKey(key)
	if err != nil {
		return key, err
	}
	l.mu.Lock()
	delete(l.operator, norm)
	if ks := l.keys[norm]; ks != nil {
		ks.written = time.Time{}
	}
	l.mu.Unlock()
	return norm, nil
}

// Has reports whether es holds key.
func Has(es []Entry, key string) bool {
	return slices.ContainsFunc(es, func(e Entry) bool { return e.Key == key })
}

// OpenPinnedKeys opens a model's pinned recommendation map with no daemon
// running, through its subsystem's Pinned.
func (s *Subsystem) OpenPinnedKeys(cfg config.Section, pinRoot, model string) (PinnedKeys, error) {
	if s.Pinned == nil {
		return nil, fmt.Errorf("%s/%s: %w", s.Name, model, ErrNotKeyed)
	}
	return s.Pinned(cfg, pinRoot, model)
}

// Reconfigurer is Objects that can take a changed section of the
// configuration (a reload) while they run. Reconfigure checks next
// against old, the section they were opened with, and refuses what it
// cannot apply live, saying what; otherwise it returns the change to
// commit, which cannot fail. Objects that are not Reconfigurers take a
// changed section only at the next start.
type Reconfigurer interface {
	Reconfigure(old, next config.Section) (commit func(), err error)
}
