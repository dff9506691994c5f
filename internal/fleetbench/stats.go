package fleetbench

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/mlbpf/mlbpf/internal/tcpbench"
)

// Speedup is what a fleet saves a joining host: the geometric means of
// the connections lone and joining hosts needed, their ratio, and the
// ratio's 95 % confidence interval over the runs.
type Speedup struct {
	Alone, Joined []int
	// AloneMean and JoinedMean are geometric means; Ratio is
	// AloneMean/JoinedMean, within [Low, High] (Welch's t interval on
	// the logarithms: the runs are independent hosts, and a count's
	// spread grows with it). Low is 0 and High +Inf with fewer than two
	// runs of either.
	AloneMean, JoinedMean, Ratio, Low, High float64
}

// NewSpeedup estimates the speedup from per-run connection counts.
func NewSpeedup(alone, joined []int) Speedup {
	s := Speedup{Alone: alone, Joined: joined, High: math.Inf(1)}
	ma, va := logMoments(alone)
	mj, vj := logMoments(joined)
	s.AloneMean, s.JoinedMean, s.Ratio = math.Exp(ma), math.Exp(mj), math.Exp(ma-mj)
	na, nj := float64(len(alone)), float64(len(joined))
	if na < 2 || nj < 2 {
		return s
	}
	ea, ej := va/na, vj/nj
	se := math.Sqrt(ea + ej)
	if se == 0 {
		s.Low, s.High = s.Ratio, s.Ratio
		return s
	}
	// Welch–Satterthwaite degrees of freedom, rounded down (a wider
	// interval).
	df := (ea + ej) * (ea + ej) / (ea*ea/(na-1) + ej*ej/(nj-1))
	h := tcpbench.T975(max(1, int(df))) * se
	s.Low, s.High = math.Exp(ma-mj-h), math.Exp(ma-mj+h)
	return s
}

// logMoments returns the mean and sample variance of the logarithms of
// counts (a count below 1 taken as 1).
func logMoments(xs []int) (mean, variance float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += math.Log(float64(max(x, 1)))
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	for _, x := range xs {
		d := math.Log(float64(max(x, 1))) - mean
		variance += d * d
	}
	return mean, variance / float64(len(xs)-1)
}

// Goal says whether the speedup meets goal: "met" when the whole
// interval is at or above it, "missed" when the whole interval is below
// it, "unclear" when it straddles it.
func (s Speedup) Goal(goal float64) string {
	switch {
	case s.Low >= goal:
		return "met"
	case s.High < goal:
		return "missed"
	}
	return "unclear"
}

// String is "5.30[4.10,6.80]".
func (s Speedup) String() string { return fmt.Sprintf("%.2f[%.2f,%.2f]", s.Ratio, s.Low, s.High) }

// Counts formats per-run counts: "61,52,57".
func Counts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
