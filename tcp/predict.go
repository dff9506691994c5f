package tcp

import "math"

// The counterfactual model: what goodput would algorithm alg have had on a
// connection that ran another algorithm? See doc.go for the reasoning.

const (
	// lossGateLow and lossGateHigh bound the loss rates over which a
	// rate-based algorithm's advantage is phased in: below 0.1 % the
	// default is not loss-limited, above 1 % it is.
	lossGateLow  = 0.001
	lossGateHigh = 0.01
	// rateEfficiency is the share of the bottleneck bandwidth a
	// rate-based algorithm is assumed to deliver before calibration
	// (BBR's gain cycle averages to 1; ProbeRTT and pacing cost some).
	rateEfficiency = 0.9
	// mathisC is the constant of the Mathis model, √(3/2).
	mathisC = 1.22
)

// lossGate is 0 below lossGateLow, 1 above lossGateHigh, smooth between.
func lossGate(p float64) float64 {
	x := (p - lossGateLow) / (lossGateHigh - lossGateLow)
	x = math.Min(math.Max(x, 0), 1)
	return x * x * (3 - 2*x)
}

// mathis returns the Mathis et al. bound on a loss-based sender's rate in
// bytes/s: MSS/RTT · C/√p, +Inf without loss or RTT.
func mathis(mss float64, rttSec, p float64) float64 {
	if p <= 0 || rttSec <= 0 || mss <= 0 {
		return math.Inf(1)
	}
	return mss / rttSec * mathisC / math.Sqrt(p)
}

// predictGoodput returns the goodput (bytes/s) the model predicts alg
// would have had on connection c, which ran c.CC, before calibration.
// ok is false when c says nothing about alg (no goodput).
func predictGoodput(c *Conn, alg string) (g float64, ok bool) {
	obs := c.Goodput()
	if obs <= 0 || math.IsNaN(obs) {
		return 0, false
	}
	ran, want := ClassOf(c.CC), ClassOf(alg)
	p := c.Loss()
	switch {
	case ran == want:
		// Same response to loss: nothing observed tells them apart.
		return obs, true
	case ran == LossBased && want == RateBased:
		// The default's rate is bounded by loss; a rate-based algorithm
		// runs at the bottleneck the path has shown (the peak delivery
		// rate sample), less what is lost, once loss limits the default.
		if !c.RateSampled || c.MaxRate <= 0 {
			return obs, true
		}
		alt := math.Max(obs, rateEfficiency*(1-p)*c.MaxRate)
		return obs + lossGate(p)*(alt-obs), true
	default: // rate-based ran, loss-based wanted
		// The loss-based algorithm would be held to the Mathis bound.
		rtt := c.SRTT.Seconds()
		if c.MinRTT > 0 {
			rtt = c.MinRTT.Seconds()
		}
		return math.Min(obs, mathis(float64(c.MSS), rtt, p)), true
	}
}
