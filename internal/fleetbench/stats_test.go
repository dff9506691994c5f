package fleetbench

import (
	"math"
	"testing"
)

func TestSpeedup(t *testing.T) {
	// Every run alike: no spread, the interval is the point.
	s := NewSpeedup([]int{60, 60, 60}, []int{12, 12, 12})
	if math.Abs(s.Ratio-5) > 1e-9 || s.Low != s.Ratio || s.High != s.Ratio || s.Goal(4.99) != "met" || s.Goal(5.01) != "missed" {
		t.Fatalf("constant runs: %v, want 5[5,5]", s)
	}
	// Two of four joins lost the hint (bench-fleet before the one-sided
	// overrule): the interval straddles 5 however good the median.
	s = NewSpeedup([]int{61, 52, 57, 61}, []int{12, 52, 53, 12})
	if !(s.Low < 1.5 && s.High > 5) || s.Goal(5) != "unclear" {
		t.Fatalf("bimodal joins: %v %s, want an interval from below 1.5 to above 5, unclear", s, s.Goal(5))
	}
	// By hand: logs of alone 50, 60 and joined 10, 12; Welch's df is 2
	// (equal variances and sizes), t975(2) = 4.3027.
	s = NewSpeedup([]int{50, 60}, []int{10, 12})
	d := math.Log(60.0 / 50)
	se := math.Sqrt(d * d / 2 / 2 * 2)
	want := math.Exp(4.3027 * se)
	if math.Abs(s.Ratio-5) > 1e-9 || math.Abs(s.High/s.Ratio-want) > 1e-3 || math.Abs(s.Ratio/s.Low-want) > 1e-3 {
		t.Fatalf("two runs each: %v, want 5 ×/÷ %.3f", s, want)
	}
	if s := NewSpeedup([]int{50}, []int{10}); !math.IsInf(s.High, 1) || s.Low != 0 || s.Goal(5) != "unclear" {
		t.Fatalf("one run: %v %s, want an unbounded interval", s, s.Goal(5))
	}
	if got := Counts([]int{61, 52}); got != "61,52" {
		t.Fatalf("Counts: %q", got)
	}
}
