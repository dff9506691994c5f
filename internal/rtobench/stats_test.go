package rtobench

import (
	"math/rand/v2"
	"testing"
)

// TestP99RatioPaired: drift common to the blocks of arms measured at
// once cancels in their ratio (a paired bootstrap), while the same arms
// drawn apart give a wide interval.
func TestP99RatioPaired(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a, b, c blocks
	for range 10 {
		level := 1000 + 500*rng.Float64() // the path's drift, block by block
		var xa, xb, xc []float64
		for range 40 {
			x := level * (1 + rng.Float64())
			xa, xb = append(xa, x), append(xb, 0.9*x)
			xc = append(xc, (1000+500*rng.Float64())*(1+rng.Float64()))
		}
		a, b, c = append(a, xa), append(b, xb), append(c, xc)
	}
	if r := p99Ratio(b, a); r.Low < 0.8999 || r.High > 0.9001 || r.Mean < 0.8999 || r.Mean > 0.9001 {
		t.Fatalf("paired ratio %v, want exactly 0.9", r)
	}
	if r := p99Ratio(c, a); r.High-r.Low < 0.05 {
		t.Fatalf("unpaired ratio %v: want a wide interval", r)
	}
	if iv := p99Interval(a); iv.Half <= 0 || iv.Mean < 1500 {
		t.Fatalf("p99 interval %+v", iv)
	}
}
