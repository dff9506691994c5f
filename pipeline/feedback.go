package pipeline

import (
	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/model"
)

// periodFeedback sums up the outcomes fed back over one period, for the
// agents' feedback events.
type periodFeedback struct {
	outcomes, accepted int
	n                  [model.ArmCount]int
	sum                [model.ArmCount]float64
	predN              int
	predErr            float64
}

func (p *periodFeedback) add(fb model.Feedback, accepted bool) {
	p.outcomes++
	if accepted {
		p.accepted++
	}
	if fb.Arm < model.ArmCount {
		p.n[fb.Arm]++
		p.sum[fb.Arm] += fb.Reward
	}
	if fb.HasPrediction {
		p.predN++
		p.predErr += fb.Predicted - fb.Reward
	}
}

func (p *periodFeedback) merge(q periodFeedback) {
	p.outcomes += q.outcomes
	p.accepted += q.accepted
	for i := range p.n {
		p.n[i] += q.n[i]
		p.sum[i] += q.sum[i]
	}
	p.predN += q.predN
	p.predErr += q.predErr
}

// take returns the summary and starts a new period; nil when nothing was
// fed back.
func (p *periodFeedback) take() *agent.Feedback {
	if p.outcomes == 0 {
		return nil
	}
	f := &agent.Feedback{Outcomes: p.outcomes, Accepted: p.accepted, Arms: map[string]agent.ArmFeedback{}}
	for i, n := range p.n {
		if n > 0 {
			f.Arms[model.Arm(i).String()] = agent.ArmFeedback{N: n, MeanReward: p.sum[i] / float64(n)}
		}
	}
	if p.predN > 0 {
		e := p.predErr / float64(p.predN)
		f.PredictionError = &e
	}
	*p = periodFeedback{}
	return f
}
