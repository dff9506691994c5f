package rtobench

import (
	"math"
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

// TestTailP99: the bootstrap's p99 of a resample (tail) is the p99 of
// its flows pooled and sorted, also where the resample's blocks are the
// arm's slowest (its p99 below the cut, counted only) or hold one flow.
func TestTailP99(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := range 200 {
		var b blocks
		nb := 1 + rng.IntN(30)
		for k := range nb {
			n := rng.IntN(3 + trial*5)
			scale := 1.0
			if k%7 == 0 {
				scale = 100 // slow blocks: resamples of them fall back
			}
			var x []float64
			for range n {
				v := scale * rng.ExpFloat64()
				if rng.IntN(4) == 0 {
					v = float64(rng.IntN(5)) // ties
				}
				x = append(x, v)
			}
			b = append(b, x)
		}
		tl := newTail(b)
		var buf []float64
		for range 50 {
			idx := make([]int, 1+rng.IntN(2*nb))
			for j := range idx {
				idx[j] = rng.IntN(nb)
			}
			want, got := b.p99(idx, nil), tl.p99(idx, &buf)
			if want != got && !(math.IsNaN(want) && math.IsNaN(got)) {
				t.Fatalf("trial %d, blocks %v: p99 %v, want %v", trial, idx, got, want)
			}
		}
	}
}
