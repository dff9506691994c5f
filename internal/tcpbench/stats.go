package tcpbench

import (
	"fmt"
	"math"
)

// Estimate is a figure with its 95 % confidence interval.
type Estimate struct {
	Value, Lo, Hi float64
}

// HalfWidth is the interval's half width relative to the value (0.05:
// ±5 %); +Inf when the value is 0.
func (e Estimate) HalfWidth() float64 {
	if e.Value == 0 {
		return math.Inf(1)
	}
	return (e.Hi - e.Lo) / 2 / math.Abs(e.Value)
}

// Contains says whether x is inside the interval.
func (e Estimate) Contains(x float64) bool { return e.Lo <= x && x <= e.Hi }

// format prints the estimate divided by scale: "value [lo..hi]", with
// prec decimals.
func (e Estimate) format(scale float64, prec int) string {
	return fmt.Sprintf("%.*f [%.*f..%.*f]", prec, e.Value/scale, prec, e.Lo/scale, prec, e.Hi/scale)
}

// meanCI is the mean of v with Student's t interval.
func meanCI(v []float64) Estimate {
	n := float64(len(v))
	if len(v) == 0 {
		return Estimate{}
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	m := sum / n
	if len(v) < 2 {
		return Estimate{m, math.Inf(-1), math.Inf(1)}
	}
	var ss float64
	for _, x := range v {
		ss += (x - m) * (x - m)
	}
	h := T975(len(v)-1) * math.Sqrt(ss/(n-1)/n)
	return Estimate{m, m - h, m + h}
}

// ratioCI is mean(a)/mean(b) for paired samples (a[i] and b[i] measured
// in the same round) with a t interval from the delta method, which keeps
// the pairing: noise common to both samples of a round cancels.
func ratioCI(a, b []float64) Estimate {
	n := min(len(a), len(b))
	if n == 0 {
		return Estimate{}
	}
	a, b = a[:n], b[:n]
	ma, mb := meanCI(a).Value, meanCI(b).Value
	if mb == 0 {
		return Estimate{math.Inf(1), math.Inf(-1), math.Inf(1)}
	}
	r := ma / mb
	if n < 2 {
		return Estimate{r, math.Inf(-1), math.Inf(1)}
	}
	// The linearised residuals a - r·b have mean 0 and carry the
	// variance of the ratio's estimator (times mb²).
	var ss float64
	for i := range n {
		d := a[i] - r*b[i]
		ss += d * d
	}
	se := math.Sqrt(ss/float64(n-1)/float64(n)) / math.Abs(mb)
	h := T975(n-1) * se
	return Estimate{r, r - h, r + h}
}

// T975 is the 97.5th percentile of Student's t distribution with df
// degrees of freedom (a two-sided 95 % interval): exact for df ≤ 4, and
// from the Cornish-Fisher expansion in 1/df above (error below 1e-3).
func T975(df int) float64 {
	switch {
	case df <= 0:
		return math.Inf(1)
	case df <= 4:
		return [...]float64{12.7062, 4.3027, 3.1824, 2.7764}[df-1]
	}
	const z = 1.959963984540054
	z3, z5 := z*z*z, z*z*z*z*z
	z7, z9 := z5*z*z, z5*z*z*z*z
	g := [...]float64{
		(z3 + z) / 4,
		(5*z5 + 16*z3 + 3*z) / 96,
		(3*z7 + 19*z5 + 17*z3 - 15*z) / 384,
		(79*z9 + 776*z7 + 1482*z5 - 1920*z3 - 945*z) / 92160,
	}
	v, t := float64(df), z
	p := 1.0
	for _, gi := range g {
		p *= v
		t += gi / p
	}
	return t
}
