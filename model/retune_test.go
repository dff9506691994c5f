package model

import (
	"testing"
	"time"
)

// TestRetune: a running model takes new options without losing its mode
// or evidence; a lower MaxMode lowers the mode; invalid options change
// nothing.
func TestRetune(t *testing.T) {
	m, store, _ := modelIn(t, StateInitialized)
	mustDo(t, m.ReInit(Options{MaxMode: ModeCollaboration}))
	mustDo(t, m.Start(RunConfig{}))
	mustDo(t, m.RenewLease(1))
	mustDo(t, m.SetMode(ModeCollaboration, "test"))
	m.Controller().Observe(Outcome{Arm: ArmModel, Reward: 1})

	mustDo(t, m.Retune(Options{MaxMode: ModeRecommendation, SleepTimeout: 50 * time.Millisecond, CollabPermille: 300}, "reload"))
	if m.Mode() != ModeCollaboration || m.Options().MaxMode != ModeRecommendation || m.Options().SleepTimeout != 50*time.Millisecond {
		t.Fatalf("after raising: mode %v, options %+v", m.Mode(), m.Options())
	}
	if store.Current().CollabPermille != 300 || m.Controller().Config().MaxMode != ModeRecommendation {
		t.Errorf("block %+v, controller %+v", store.Current(), m.Controller().Config())
	}
	if n := m.Controller().Evidence().Arms[ArmModel].N; n != 1 {
		t.Errorf("evidence lost by a retune: %d outcomes", n)
	}
	mustDo(t, m.SetMode(ModeRecommendation, "now allowed"))

	ctl := store.Current()
	if err := m.Retune(Options{SleepTimeout: time.Second, Lease: time.Millisecond}, "bad"); err == nil {
		t.Fatal("a lease shorter than the period was taken")
	}
	if store.Current() != ctl || m.Options().MaxMode != ModeRecommendation {
		t.Fatal("a refused retune changed the model")
	}
	mustDo(t, m.Retune(Options{MaxMode: ModeLearning}, "reload"))
	if m.Mode() != ModeLearning || store.Current().Mode != ModeLearning || m.State() != StateRunning {
		t.Errorf("a lower max_mode: mode %v, block %+v, state %v", m.Mode(), store.Current(), m.State())
	}
}

// TestNarrowHoldout: the holdout of the control block narrows below the
// options' share and back up to it, never above it; the mode, the
// options and the evidence stay; an equal share writes nothing.
func TestNarrowHoldout(t *testing.T) {
	m, store, _ := modelIn(t, StateInitialized)
	if err := m.NarrowHoldout(5, "before start"); err != nil {
		t.Fatalf("narrowing an initialized model: %v", err)
	}
	mustDo(t, m.ReInit(Options{HoldoutPermille: 10}))
	mustDo(t, m.Start(RunConfig{}))
	mustDo(t, m.RenewLease(1))
	mustDo(t, m.SetMode(ModeRecommendation, "test"))
	m.Controller().Observe(Outcome{Arm: ArmModel, Reward: 1})

	mustDo(t, m.NarrowHoldout(4, "tail cost"))
	ctl := store.Current()
	if ctl.HoldoutPermille != 4 || ctl.Mode != ModeRecommendation || m.Options().HoldoutPermille != 10 {
		t.Fatalf("after narrowing to 4‰: block %+v, options' share %d", ctl, m.Options().HoldoutPermille)
	}
	if n := m.Controller().Evidence().Arms[ArmModel].N; n != 1 {
		t.Errorf("evidence lost by narrowing the holdout: %d outcomes", n)
	}
	mustDo(t, m.NarrowHoldout(4, "again"))
	if store.Current() != ctl {
		t.Errorf("an unchanged share wrote the block: %+v, was %+v", store.Current(), ctl)
	}
	mustDo(t, m.NarrowHoldout(50, "wider than the options"))
	if got := store.Current().HoldoutPermille; got != 10 {
		t.Errorf("a share above the options' 10‰ gave %d‰, want 10", got)
	}
	if err := m.NarrowHoldout(Permille+1, "bad"); err == nil {
		t.Error("a share above 1000‰ was taken")
	}
	mustDo(t, m.Retune(Options{HoldoutPermille: 20}, "reload"))
	if got := store.Current().HoldoutPermille; got != 20 {
		t.Errorf("a retune after narrowing: %d‰, want the options' 20", got)
	}
}
