package learner

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func TestEstimate(t *testing.T) {
	var e Estimate
	for _, x := range []float64{1, 2, 3, 4} {
		e.Add(x, 1)
	}
	if e.W != 4 || e.Mean != 2.5 || math.Abs(e.Var()-5.0/3) > 1e-12 {
		t.Fatalf("estimate %+v var %v, want w 4 mean 2.5 var 5/3", e, e.Var())
	}
	e.Add(math.NaN(), 1)
	e.Add(1, 0)
	if e.W != 4 {
		t.Fatalf("NaN or zero weight counted: %+v", e)
	}
	e.Decay(0.5)
	if e.W != 2 || e.Mean != 2.5 {
		t.Fatalf("after decay %+v, want w 2 mean 2.5", e)
	}
}

func TestPosteriorPrefersRealEvidence(t *testing.T) {
	b := New(DefaultConfig(), "a")
	for range 50 {
		b.Predict("a", 5) // a model keeps saying 5
	}
	pred := b.Posterior("a")
	if pred.Mean < 4.5 || pred.Var < b.Config.ModelVar*0.9 {
		t.Fatalf("predictions only: %+v, want mean near 5 and variance at least ModelVar", pred)
	}
	for range 30 {
		b.Observe("a", 1) // reality says 1
	}
	got := b.Posterior("a")
	if got.Mean > 1.2 {
		t.Fatalf("with 30 real rewards of 1 and predictions of 5: mean %v, want near 1", got.Mean)
	}
}

func TestProbBetterAndSample(t *testing.T) {
	b := New(DefaultConfig(), "x", "y")
	for range 20 {
		b.Observe("x", 2)
		b.Observe("y", 1)
	}
	if p := b.ProbBetter("x", "y", 0.5); p < 0.99 {
		t.Fatalf("P(x > y + 0.5) = %v, want > 0.99", p)
	}
	if p := b.ProbBetter("y", "x", 0); p > 0.01 {
		t.Fatalf("P(y > x) = %v, want < 0.01", p)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	wins := 0
	for range 200 {
		if b.Sample(rng, []string{"x", "y"}) == "x" {
			wins++
		}
	}
	if wins < 195 {
		t.Fatalf("x drawn %d/200 times, want nearly always", wins)
	}
	if got := b.Best([]string{"x", "y"}); got != "x" {
		t.Fatalf("best %q, want x", got)
	}
	if got := b.Sample(rng, nil); got != "" {
		t.Fatalf("sample of no candidates %q, want empty", got)
	}
}

func TestBanditJSONRoundTrip(t *testing.T) {
	b := New(DefaultConfig(), "cubic", "bbr")
	b.Observe("cubic", 3)
	b.Predict("bbr", 4)
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var c Bandit
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Posterior("bbr") != b.Posterior("bbr") || c.Posterior("cubic") != b.Posterior("cubic") {
		t.Fatalf("posteriors changed through JSON: %s", data)
	}
}

func TestDecayForgetsEveryArm(t *testing.T) {
	b := New(DefaultConfig(), "old", "new")
	for range 10 {
		b.Observe("old", 1)
	}
	for range 200 {
		b.Decay()
		b.Observe("new", 2)
	}
	if w := b.Arms["old"].Real.W; w > 10*0.2 {
		t.Fatalf("evidence of an arm not tried for 200 rounds weighs %v, want it mostly forgotten", w)
	}
	if w := b.Arms["new"].Real.W; w < 50 {
		t.Fatalf("evidence of the arm tried every round weighs %v, want about 1/(1-discount)", w)
	}
}
