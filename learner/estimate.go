package learner

import "math"

// Estimate is a weighted running mean and variance (West's weighted
// version of Welford's algorithm) with exponential forgetting. The zero
// value is an empty estimate.
type Estimate struct {
	// W is the total weight of the observations (their count without
	// forgetting).
	W float64 `json:"w"`
	// Mean is the weighted mean.
	Mean float64 `json:"mean"`
	// S is the weighted sum of squared deviations from the mean.
	S float64 `json:"s"`
}

// Add adds x with weight w (> 0). Non-finite values are ignored.
func (e *Estimate) Add(x, w float64) {
	if w <= 0 || math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(w) || math.IsInf(w, 0) {
		return
	}
	e.W += w
	d := x - e.Mean
	e.Mean += d * w / e.W
	e.S += w * d * (x - e.Mean)
}

// Decay multiplies the weight of every past observation by f (0 < f ≤ 1):
// the estimate forgets at that rate.
func (e *Estimate) Decay(f float64) {
	if f <= 0 || f >= 1 {
		return
	}
	e.W *= f
	e.S *= f
}

// Var returns the variance of the observations (the weighted sample
// variance, with frequency weights), or 0 with less than two
// observations' weight.
func (e Estimate) Var() float64 {
	if e.W <= 1 {
		return 0
	}
	return math.Max(e.S/(e.W-1), 0)
}

// StdErr returns the standard error of the mean, +Inf with no
// observations.
func (e Estimate) StdErr() float64 {
	if e.W <= 0 {
		return math.Inf(1)
	}
	return math.Sqrt(e.Var() / e.W)
}
