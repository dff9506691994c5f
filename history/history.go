package history

import (
	"math/rand/v2"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/model"
)

// Version is the version of the segments' format.
const Version = 1

// SampleSize is the number of rewards an ArmPeriod keeps of its arm's
// outcomes in one period (a uniform sample), to draw their distribution.
const SampleSize = 12

// Period is what one period of the loop left in the history.
type Period struct {
	Time time.Time `json:"t"`
	// Mode and State are the model's after the period's decision.
	Mode  string `json:"mode"`
	State string `json:"state"`
	// Arms are the outcomes fed back during the period, per arm that had
	// any.
	Arms []ArmPeriod `json:"arms,omitempty"`
	// Records the loop read during the period, Lost those the kernel
	// lost.
	Records uint64 `json:"records,omitempty"`
	Lost    uint64 `json:"lost,omitempty"`
	// Efficiency is the estimate at the end of the period, nil before
	// there is any.
	Efficiency *agent.Efficiency `json:"efficiency,omitempty"`
	// Decision is the mode controller's.
	Decision Decision `json:"decision"`
}

// ArmPeriod sums up one arm's outcomes in a period.
type ArmPeriod struct {
	Arm  string  `json:"arm"`
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	// Sample is a uniform sample of the rewards, at most SampleSize.
	Sample []float32 `json:"sample,omitempty"`
}

// Decision is a mode controller's decision (model.Decision).
type Decision struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Changed bool   `json:"changed,omitempty"`
	Reason  string `json:"reason"`
}

// DecisionOf converts the controller's decision.
func DecisionOf(d model.Decision) Decision {
	return Decision{From: d.From.String(), To: d.To.String(), Changed: d.Changed, Reason: d.Reason}
}

// Keys is a snapshot of a model's keys.
type Keys struct {
	Time time.Time `json:"time"`
	Keys []Key     `json:"keys"`
}

// Key is one key of the recommendation map, with the outcomes fed back
// for it since the daemon started.
type Key struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// By is who wrote it: "operator" or "learner", or empty.
	By       string         `json:"by,omitempty"`
	Evidence map[string]Arm `json:"evidence,omitempty"`
}

// Arm sums up an arm's outcomes.
type Arm struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
}

// Acc accumulates a period's outcomes per arm. Its zero value is ready;
// Add is cheap and allocates nothing once the samples have grown.
type Acc struct {
	arms [model.ArmCount]armAcc
}

type armAcc struct {
	n             int
	sum, min, max float64
	sample        []float32
}

// Add adds one outcome.
func (a *Acc) Add(arm model.Arm, reward float64) {
	if arm >= model.ArmCount {
		return
	}
	s := &a.arms[arm]
	s.n++
	s.sum += reward
	if s.n == 1 || reward < s.min {
		s.min = reward
	}
	if s.n == 1 || reward > s.max {
		s.max = reward
	}
	// Reservoir sampling: every outcome has the same chance to be kept.
	if len(s.sample) < SampleSize {
		s.sample = append(s.sample, float32(reward))
	} else if j := rand.IntN(s.n); j < SampleSize {
		s.sample[j] = float32(reward)
	}
}

// Take appends the period's arms to p.Arms and starts a new period.
func (a *Acc) Take(p *Period) {
	for i := range a.arms {
		s := &a.arms[i]
		if s.n == 0 {
			continue
		}
		p.Arms = append(p.Arms, ArmPeriod{
			Arm: model.Arm(i).String(), N: s.n, Mean: s.sum / float64(s.n), Min: s.min, Max: s.max,
			Sample: append([]float32(nil), s.sample...),
		})
		s.n, s.sum, s.sample = 0, 0, s.sample[:0]
	}
}
