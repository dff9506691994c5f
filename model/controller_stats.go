package model

import "math"

// The controller's tests use Student's t distribution: a mean estimated
// from 15 samples with an estimated variance has heavier tails than the
// normal, and the controller's first look often has that few samples
// (tcp/cc's MinSamples is 15). The functions below compute the t
// distribution for any positive, not necessarily integer, number of
// degrees of freedom (Welch–Satterthwaite gives fractional ones) from the
// regularized incomplete beta function; ν = +Inf is the normal.

// normalDF is the degrees of freedom above which the t distribution is
// taken for the normal: their quantiles differ by less than 10⁻⁶ there,
// and the continued fraction would need more terms than it is given.
const normalDF = 1e7

// studentUpperTail returns P(T > t) for T with Student's t distribution
// with nu degrees of freedom (nu > 0; +Inf for the normal).
func studentUpperTail(t, nu float64) float64 {
	switch {
	case math.IsNaN(t) || math.IsNaN(nu) || nu <= 0:
		return math.NaN()
	case nu > normalDF:
		return upperTail(t)
	case math.IsInf(t, 1):
		return 0
	case math.IsInf(t, -1):
		return 1
	}
	// P(|T| > |t|) = I_x(ν/2, 1/2) with x = ν/(ν+t²); 1−x is computed
	// on its own so that small t loses no precision.
	t2 := t * t
	x, y := nu/(nu+t2), t2/(nu+t2)
	half := 0.5 * regIncBeta(nu/2, 0.5, x, y)
	if t < 0 {
		return 1 - half
	}
	return half
}

// studentQuantile returns t with P(T ≤ t) = p for Student's t with nu
// degrees of freedom, for 0 < p < 1.
func studentQuantile(p, nu float64) float64 {
	switch {
	case math.IsNaN(p) || p <= 0 || p >= 1 || math.IsNaN(nu) || nu <= 0:
		return math.NaN()
	case nu > normalDF:
		return normalQuantile(p)
	case p < 0.5:
		return -studentQuantile(1-p, nu)
	case p == 0.5:
		return 0
	}
	// Newton's method on f(t) = P(T > t) − (1−p) from the normal
	// quantile, which is below the root (t's tails are heavier). For
	// t > 0, f decreases and is convex, so every step stays below the
	// root and the iterates rise to it.
	lg1, _ := math.Lgamma((nu + 1) / 2)
	lg2, _ := math.Lgamma(nu / 2)
	logNorm := lg1 - lg2 - 0.5*math.Log(nu*math.Pi)
	q := 1 - p
	t := normalQuantile(p)
	for range 1000 {
		f := studentUpperTail(t, nu) - q
		density := math.Exp(logNorm - (nu+1)/2*math.Log1p(t*t/nu))
		step := f / density
		if math.IsNaN(step) || math.IsInf(step, 0) {
			break
		}
		t += step
		if math.Abs(step) <= 1e-13*t {
			break
		}
	}
	return t
}

// welchDF returns the Welch–Satterthwaite degrees of freedom of the
// difference of the means of a and b: 0 unless each has two samples or
// more, the pooled N_a + N_b − 2 when neither varies.
func welchDF(a, b ArmStats) float64 {
	if a.N < 2 || b.N < 2 {
		return 0
	}
	va, vb := a.Variance/float64(a.N), b.Variance/float64(b.N)
	den := va*va/float64(a.N-1) + vb*vb/float64(b.N-1)
	if den == 0 {
		return float64(a.N + b.N - 2)
	}
	return (va + vb) * (va + vb) / den
}

// regIncBeta returns the regularized incomplete beta function I_x(a, b)
// for a, b > 0 and 0 ≤ x ≤ 1, where y = 1 − x is given by the caller
// (computed without cancellation). It evaluates the continued fraction
// of I_x(a, b) where it converges quickly, x < (a+1)/(a+b+2), and
// 1 − I_y(b, a) elsewhere.
func regIncBeta(a, b, x, y float64) float64 {
	switch {
	case x <= 0:
		return 0
	case y <= 0:
		return 1
	case x > (a+1)/(a+b+2):
		return 1 - regIncBeta(b, a, y, x)
	}
	lga, _ := math.Lgamma(a)
	lgb, _ := math.Lgamma(b)
	lgab, _ := math.Lgamma(a + b)
	front := math.Exp(a*math.Log(x) + b*math.Log(y) - math.Log(a) - (lga + lgb - lgab))
	return front / betaFraction(a, b, x)
}

// betaFraction evaluates 1 + d₁/(1 + d₂/(1 + …)), the continued fraction
// whose reciprocal times x^a·(1−x)^b/(a·B(a,b)) is I_x(a, b), with
//
//	d₂ₘ₊₁ = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1))
//	d₂ₘ   = m(b−m)x / ((a+2m−1)(a+2m))
//
// by the modified Lentz method.
func betaFraction(a, b, x float64) float64 {
	const tiny, eps = 1e-300, 1e-15
	guard := func(v float64) float64 {
		if math.Abs(v) < tiny {
			return tiny
		}
		return v
	}
	f, c, d := 1.0, 1.0, 0.0
	step := func(coef float64) float64 {
		d = 1 / guard(1+coef*d)
		c = guard(1 + coef/c)
		delta := c * d
		f *= delta
		return delta
	}
	for m := 0.0; m < 10000; m++ {
		step(-(a + m) * (a + b + m) * x / ((a + 2*m) * (a + 2*m + 1)))
		if delta := step((m + 1) * (b - m - 1) * x / ((a + 2*m + 1) * (a + 2*m + 2))); math.Abs(delta-1) < eps {
			break
		}
	}
	return f
}
