package model

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestControllerSnapshotContinues interrupts a controller in the middle of
// COLLABORATION, restores its JSON snapshot into a new one, and checks the
// new one reaches the same decisions at the same outcomes as one that was
// never interrupted.
func TestControllerSnapshotContinues(t *testing.T) {
	cfg := ControllerConfig{MinSamples: 30, Confidence: 0.99, MinEffect: 0.02, MaxMode: ModeRecommendation}
	const before, after, every = 200, 4000, 10
	// A small effect, so that the promotion comes long after the
	// interruption.
	slight := world{base: 40, model: 43, sd: 10, collab: 0.5}
	r := rand.New(rand.NewPCG(7, 11))
	outcomes := make([]Outcome, before+after)
	for i := range outcomes {
		outcomes[i] = slight.outcome(r, ModeCollaboration)
	}
	type change struct {
		at int // outcomes observed when the mode changed
		d  Decision
	}
	play := func(c *Controller, from, to int) []change {
		var out []change
		for i := from; i < to; i++ {
			c.Observe(outcomes[i])
			if (i+1)%every == 0 {
				if d := c.Decide(ModeCollaboration); d.Changed {
					out = append(out, change{i + 1, d})
				}
			}
		}
		return out
	}

	whole := NewController(cfg)
	if d := play(whole, 0, before); len(d) != 0 {
		t.Fatalf("promoted after %d outcomes already (%v): choose a later interruption", before, d)
	}
	b, err := json.Marshal(whole.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var s ControllerSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	restored := NewController(cfg)
	if err := restored.Restore(s, ModeCollaboration); err != nil {
		t.Fatal(err)
	}
	if got, want := restored.Evidence(), whole.Evidence(); got != want {
		t.Fatalf("evidence after restore:\n got %+v\nwant %+v", got, want)
	}
	want, got := play(whole, before, len(outcomes)), play(restored, before, len(outcomes))
	if len(want) == 0 {
		t.Fatal("the uninterrupted controller never promoted a better model: the scenario tests nothing")
	}
	if len(got) != len(want) || got[0].at != want[0].at || got[0].d.To != want[0].d.To || got[0].d.Reason != want[0].d.Reason {
		t.Fatalf("restored controller decided %v, uninterrupted %v", got, want)
	}

}

func TestControllerRestoreRefuses(t *testing.T) {
	cfg := ControllerConfig{MinSamples: 30, Confidence: 0.99, MinEffect: 0.02}
	src := NewController(cfg)
	src.Decide(ModeLearning)
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		src.Observe(better.outcome(r, ModeLearning))
	}
	good := src.Snapshot()

	for _, tc := range []struct {
		name     string
		mutate   func(*ControllerSnapshot)
		mode     Mode
		cfg      ControllerConfig
		mismatch bool
		want     string
	}{
		{name: "another mode", mode: ModeCollaboration, mismatch: true, want: "gathered in LEARNING, the model is in COLLABORATION"},
		{name: "emergency", mutate: func(s *ControllerSnapshot) { s.Mode = ModeEmergency }, mode: ModeEmergency, mismatch: true, want: "nothing is decided on evidence in EMERGENCY"},
		{name: "other parameters", cfg: ControllerConfig{MinSamples: 50, Confidence: 0.99, MinEffect: 0.02}, mismatch: true, want: "gathered with min_samples 30"},
		{name: "negative count", mutate: func(s *ControllerSnapshot) { s.Arms[ArmModel].N = -1 }, want: "arms[model]: n=-1"},
		{name: "NaN mean", mutate: func(s *ControllerSnapshot) { s.Arms[ArmShadow].Mean = math.NaN() }, want: "arms[shadow]"},
		{name: "negative m2", mutate: func(s *ControllerSnapshot) { s.Diff.M2 = -3 }, want: "diff: n=50"},
		{name: "unpaired", mutate: func(s *ControllerSnapshot) { s.ShadowPred.N++ }, want: "want the same"},
		{name: "more pairs than shadows", mutate: func(s *ControllerSnapshot) { s.Arms[ArmShadow].N = 3 }, want: "50 paired shadow outcomes but 3"},
		{name: "tests", mutate: func(s *ControllerSnapshot) { s.Tests = 99 }, want: "tests 99"},
		{name: "promotion tests", mutate: func(s *ControllerSnapshot) { s.PromotionTests = -1 }, want: "promotion_tests -1"},
		{name: "version", mutate: func(s *ControllerSnapshot) { s.Version = 1 }, want: "version 1, want 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			mode := tc.mode
			if mode == ModeUnknown {
				mode = ModeLearning
			}
			c := tc.cfg
			if c == (ControllerConfig{}) {
				c = cfg
			}
			dst := NewController(c)
			dst.Decide(mode)
			for range 5 {
				dst.Observe(Outcome{Arm: ArmShadow, Reward: 1})
			}
			beforeEv := dst.Evidence()
			err := dst.Restore(s, mode)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrSnapshotMismatch) != tc.mismatch {
				t.Fatalf("Restore: %v, want an error with %q (mismatch %v)", err, tc.want, tc.mismatch)
			}
			if dst.Evidence() != beforeEv {
				t.Fatal("a refused snapshot changed the evidence")
			}
		})
	}
}
