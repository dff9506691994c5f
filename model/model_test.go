package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// wantTransitions is the lifecycle table, written out independently of
// the implementation's: from → operation → resulting state. Missing pairs
// are illegal.
var wantTransitions = map[State]map[Operation]State{
	StateUnknown: {OpCreate: StateCreated},
	StateCreated: {OpInit: StateInitialized, OpDestroy: StateShuttingDown},
	StateInitialized: {OpReInit: StateInitialized, OpStart: StateStarted, OpSetMode: StateInitialized,
		OpDestroy: StateShuttingDown},
	StateStarted: {OpRenewLease: StateRunning, OpStop: StateStopped, OpSetMode: StateStarted,
		OpDestroy: StateShuttingDown},
	StateRunning: {OpRenewLease: StateRunning, OpStop: StateStopped, OpSetMode: StateRunning,
		OpDestroy: StateShuttingDown},
	StateStopped: {OpReInit: StateInitialized, OpStart: StateStarted, OpSetMode: StateStopped,
		OpDestroy: StateShuttingDown},
	StateShuttingDown: {},
}

func TestNextStateTable(t *testing.T) {
	for from := State(0); from < StateCount+1; from++ {
		for op := Operation(0); op < OperationCount+1; op++ {
			want, legal := wantTransitions[from][op]
			got, ok := NextState(from, op)
			if ok != legal || got != want {
				t.Errorf("NextState(%v, %v) = %v, %v; want %v, %v", from, op, got, ok, want, legal)
			}
		}
	}
}

// callbackOf names the ops callback each method calls.
var callbackOf = map[Operation]string{
	OpInit: "init", OpReInit: "re_init", OpStart: "start", OpStop: "stop", OpDestroy: "destroy",
}

func invoke(m *Model, op Operation) error {
	switch op {
	case OpInit:
		return m.Init(Options{})
	case OpReInit:
		return m.ReInit(Options{CollabPermille: 300})
	case OpStart:
		return m.Start(RunConfig{})
	case OpRenewLease:
		return m.RenewLease(5e9)
	case OpStop:
		return m.Stop()
	case OpDestroy:
		return m.Destroy()
	case OpSetMode:
		return m.SetMode(ModeCollaboration, "test")
	}
	panic(fmt.Sprintf("no method for %v", op))
}

// TestLifecycleEveryPair runs every operation in every state.
func TestLifecycleEveryPair(t *testing.T) {
	ops := []Operation{OpInit, OpReInit, OpStart, OpRenewLease, OpStop, OpDestroy, OpSetMode}
	for from := StateUnknown; from < StateCount; from++ {
		for _, op := range ops {
			t.Run(fmt.Sprintf("%v/%v", from, op), func(t *testing.T) {
				m, store, rec := modelIn(t, from)
				ctl, writes, calls := m.Control(), len(store.History()), len(rec.Calls())
				want, legal := wantTransitions[from][op]

				err := invoke(m, op)

				if legal {
					if err != nil {
						t.Fatalf("%v in %v: %v", op, from, err)
					}
					if m.State() != want || store.Current().State != want {
						t.Errorf("state %v, stored %v; want %v", m.State(), store.Current().State, want)
					}
					if store.Current() != m.Control() {
						t.Errorf("stored %v, model has %v", store.Current(), m.Control())
					}
					if len(store.History()) != writes+1 {
						t.Errorf("%d control writes, want 1", len(store.History())-writes)
					}
					if cb, ok := callbackOf[op]; ok && !slices.Contains(rec.Calls()[calls:], cb) {
						t.Errorf("callback %s not called: %v", cb, rec.Calls()[calls:])
					}
					return
				}
				var te *TransitionError
				if !errors.Is(err, ErrIllegalTransition) || !errors.As(err, &te) {
					t.Fatalf("%v in %v = %v, want a TransitionError", op, from, err)
				}
				if te.From != from || te.Op != op {
					t.Errorf("TransitionError %+v", te)
				}
				msg := err.Error()
				if !strings.Contains(msg, from.String()) || !strings.Contains(msg, op.verb()) {
					t.Errorf("error %q does not name %v and %q", msg, from, op.verb())
				}
				if target := opTargets[op]; target != StateUnknown && !strings.Contains(msg, "to "+target.String()) {
					t.Errorf("error %q does not name the target %v", msg, target)
				}
				if errors.Is(err, ErrDestroyed) != (from == StateShuttingDown) {
					t.Errorf("errors.Is(ErrDestroyed) = %v in %v", !(from == StateShuttingDown), from)
				}
				if m.State() != from || m.Control() != ctl {
					t.Errorf("model changed: %v %v", m.State(), m.Control())
				}
				if len(store.History()) != writes {
					t.Errorf("illegal %v wrote the control block", op)
				}
				if len(rec.Calls()) != calls {
					t.Errorf("illegal %v called back: %v", op, rec.Calls()[calls:])
				}
			})
		}
	}
}

func TestZeroModel(t *testing.T) {
	var m Model
	err := m.Init(Options{})
	if want := "initializing model: illegal transition from UNKNOWN to INITIALIZED"; err == nil || err.Error() != want {
		t.Errorf("Init on the zero Model = %v, want %q", err, want)
	}
}

func TestIllegalTransitionMessage(t *testing.T) {
	m, _, _ := newTestModel(t)
	err := m.Start(RunConfig{})
	if want := "starting tcp/cc: illegal transition from CREATED to STARTED"; err == nil || err.Error() != want {
		t.Errorf("Start before Init = %v, want %q", err, want)
	}
	mustDo(t, m.Destroy())
	err = m.Destroy()
	if want := "destroying tcp/cc: illegal transition from SHUTTING_DOWN to SHUTTING_DOWN: model destroyed"; err == nil || err.Error() != want {
		t.Errorf("second Destroy = %v, want %q", err, want)
	}
	m, _, _ = newTestModel(t)
	err = m.SetMode(ModeLearning, "x")
	if want := "setting the mode of tcp/cc: illegal transition: set_mode not allowed in state CREATED"; err == nil || err.Error() != want {
		t.Errorf("SetMode before Init = %v, want %q", err, want)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLifecycleControlBlock(t *testing.T) {
	m, store, rec := newTestModel(t)
	want := Control{State: StateCreated, Mode: ModeEmergency, Generation: 1}
	if got := store.Current(); got != want {
		t.Fatalf("after Create: %v, want %v", got, want)
	}
	mustDo(t, m.Init(Options{SleepTimeout: 100 * time.Millisecond, CollabPermille: 250, HoldoutPermille: 20}))
	want = Control{State: StateInitialized, Mode: ModeLearning, CollabPermille: 250, HoldoutPermille: 20, Generation: 2}
	if got := store.Current(); got != want {
		t.Fatalf("after Init: %v, want %v", got, want)
	}
	mustDo(t, m.Start(RunConfig{}))
	want.State, want.Generation = StateStarted, 3
	if got := store.Current(); got != want {
		t.Fatalf("after Start: %v, want %v", got, want)
	}
	mustDo(t, m.RenewLease(1_000_000_000))
	want.State, want.Generation, want.LeaseExpiresNs = StateRunning, 4, 1_300_000_000
	if got := store.Current(); got != want {
		t.Fatalf("after first RenewLease: %v, want %v", got, want)
	}
	mustDo(t, m.RenewLease(1_100_000_000))
	want.LeaseExpiresNs = 1_400_000_000 // same generation: only the lease changed
	if got := store.Current(); got != want {
		t.Fatalf("after second RenewLease: %v, want %v", got, want)
	}
	mustDo(t, m.SetMode(ModeCollaboration, "operator"))
	want.Mode, want.Generation = ModeCollaboration, 5
	if got := store.Current(); got != want {
		t.Fatalf("after SetMode: %v, want %v", got, want)
	}
	mustDo(t, m.SetMode(ModeCollaboration, "again"))
	if n := len(store.History()); n != 6 {
		t.Errorf("setting the same mode wrote: %d writes", n)
	}
	mustDo(t, m.Stop())
	want.State, want.Generation, want.LeaseExpiresNs = StateStopped, 6, 0
	if got := store.Current(); got != want {
		t.Fatalf("after Stop: %v, want %v", got, want)
	}
	mustDo(t, m.Start(RunConfig{SleepTimeout: 200 * time.Millisecond}))
	mustDo(t, m.RenewLease(2e9))
	if got := store.Current().LeaseExpiresNs; got != 2_600_000_000 {
		t.Errorf("lease with the run's sleep timeout: %d, want 2.6e9", got)
	}
	if got := m.Options().SleepTimeout; got != 200*time.Millisecond {
		t.Errorf("Options().SleepTimeout = %v in this run", got)
	}
	mustDo(t, m.Destroy())
	if got := store.Current(); got.State != StateShuttingDown || got.LeaseExpiresNs != 0 {
		t.Errorf("after Destroy: %v", got)
	}
	wantCalls := []string{"create", "init", "start", "stop", "start", "destroy"}
	if got := rec.Calls(); !slices.Equal(got, wantCalls) {
		t.Errorf("callbacks %v, want %v", got, wantCalls)
	}
	if m.String() != "tcp/cc" || m.Subsystem() != "tcp" || m.Name() != "cc" {
		t.Errorf("names: %q %q %q", m, m.Subsystem(), m.Name())
	}
	hist := m.ModeHistory()
	if len(hist) != 3 || hist[2].To != ModeCollaboration || hist[2].Reason != "operator" || hist[2].Generation != 5 {
		t.Errorf("mode history %+v", hist)
	}
}

func TestLeaseFromOptions(t *testing.T) {
	m, store, _ := modelIn(t, StateInitialized)
	mustDo(t, m.ReInit(Options{SleepTimeout: time.Second, Lease: 10 * time.Second}))
	mustDo(t, m.Start(RunConfig{SleepTimeout: 2 * time.Second}))
	mustDo(t, m.RenewLease(100))
	if got := store.Current().LeaseExpiresNs; got != 100+uint64(10*time.Second) {
		t.Errorf("explicit lease: expires %d", got)
	}
	mustDo(t, m.RenewLease(1<<64-5))
	if got := store.Current().LeaseExpiresNs; got != 1<<64-1 {
		t.Errorf("lease saturates: %d", got)
	}
}

func TestRunConfigInvalid(t *testing.T) {
	m, store, _ := modelIn(t, StateInitialized)
	ctl := store.Current()
	if err := m.Start(RunConfig{SleepTimeout: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("negative SleepTimeout: %v", err)
	}
	mustDo(t, m.ReInit(Options{SleepTimeout: time.Second, Lease: 3 * time.Second}))
	ctl = store.Current()
	// A run sleep timeout beyond the explicit lease leaves no lease margin.
	if err := m.Start(RunConfig{SleepTimeout: 5 * time.Second}); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "Lease") {
		t.Errorf("sleep timeout beyond lease: %v", err)
	}
	if m.State() != StateInitialized || store.Current() != ctl {
		t.Errorf("failed Start changed the model: %v %v", m.State(), store.Current())
	}
}

func TestCallbackFailureChangesNothing(t *testing.T) {
	for _, c := range []struct {
		from State
		op   Operation
	}{
		{StateCreated, OpInit}, {StateInitialized, OpReInit}, {StateStopped, OpReInit},
		{StateInitialized, OpStart}, {StateStopped, OpStart},
		{StateStarted, OpStop}, {StateRunning, OpStop},
		{StateCreated, OpDestroy}, {StateRunning, OpDestroy},
	} {
		t.Run(fmt.Sprintf("%v/%v", c.from, c.op), func(t *testing.T) {
			m, store, rec := modelIn(t, c.from)
			ctl, opts, mode := m.Control(), m.Options(), m.Mode()
			rec.failOn(callbackOf[c.op], errInjected)
			err := invoke(m, c.op)
			if !errors.Is(err, errInjected) {
				t.Fatalf("%v = %v, want the injected error", c.op, err)
			}
			if !strings.Contains(err.Error(), "tcp/cc") {
				t.Errorf("error %q does not name the model", err)
			}
			if m.State() != c.from || m.Control() != ctl || m.Options() != opts || m.Mode() != mode {
				t.Errorf("model changed: %v %v", m.State(), m.Control())
			}
			if store.Current() != ctl {
				t.Errorf("store has %v, want %v", store.Current(), ctl)
			}
			// The retry succeeds once the callback does.
			rec.failOn(callbackOf[c.op], nil)
			if err := invoke(m, c.op); err != nil {
				t.Errorf("retry: %v", err)
			}
		})
	}
}

func TestStoreFailureChangesNothing(t *testing.T) {
	ops := []Operation{OpInit, OpReInit, OpStart, OpRenewLease, OpStop, OpDestroy, OpSetMode}
	for from := StateCreated; from < StateShuttingDown; from++ {
		for _, op := range ops {
			if _, legal := wantTransitions[from][op]; !legal {
				continue
			}
			t.Run(fmt.Sprintf("%v/%v", from, op), func(t *testing.T) {
				m, store, _ := modelIn(t, from)
				ctl, opts := m.Control(), m.Options()
				store.FailStores(errInjected)
				err := invoke(m, op)
				if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "storing control block") {
					t.Fatalf("%v = %v, want the injected store error", op, err)
				}
				if m.State() != from || m.Control() != ctl || m.Options() != opts {
					t.Errorf("model changed: %v %v", m.State(), m.Control())
				}
				if store.Current() != ctl {
					t.Errorf("store has %v, want %v", store.Current(), ctl)
				}
			})
		}
	}
}

func TestDeactivationRestoresControlBlock(t *testing.T) {
	m, store, rec := modelIn(t, StateRunning)
	ctl := store.Current()
	rec.failOn("stop", errInjected)
	if err := m.Stop(); !errors.Is(err, errInjected) {
		t.Fatalf("Stop = %v", err)
	}
	h := store.History()
	// Written STOPPED first (the kernel falls back at once), then restored.
	if len(h) < 2 || h[len(h)-2].State != StateStopped || h[len(h)-1] != ctl {
		t.Errorf("history tail %v, want STOPPED then %v", h[len(h)-2:], ctl)
	}
	// The restore itself failing is reported too.
	store.FailStoresAfter(1, errors.New("map gone"))
	err := m.Stop()
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "restoring control block: map gone") {
		t.Errorf("Stop with failing restore = %v", err)
	}
	if m.State() != StateRunning {
		t.Errorf("state %v", m.State())
	}
}

func TestCreate(t *testing.T) {
	store := new(MemoryControlStore)
	store.Set(Control{State: StateRunning, Mode: ModeRecommendation, Generation: 41, LeaseExpiresNs: 99})
	m, err := Create("tcp", "cc", nil, store)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := store.Current(), (Control{State: StateCreated, Mode: ModeEmergency, Generation: 42}); got != want {
		t.Errorf("after a restart: %v, want %v (generation continues)", got, want)
	}
	if _, ok := m.Ops().(GenericModelOps); !ok {
		t.Errorf("nil ops gives %T", m.Ops())
	}
	if m.Controller() != nil || m.Mode() != ModeEmergency || m.State() != StateCreated {
		t.Errorf("fresh model: %v %v", m.State(), m.Mode())
	}

	store.Set(Control{Generation: 1<<32 - 1})
	if _, err := Create("tcp", "cc", nil, store); err != nil || store.Current().Generation != 1 {
		t.Errorf("generation wraps to 1, not 0: %v, %v", store.Current(), err)
	}

	for _, c := range []struct{ sub, name string }{
		{"", "cc"}, {"tcp", ""}, {"tcp", "a/b"}, {"..", "cc"}, {"tcp", "c c"}, {"tcp", strings.Repeat("x", 65)},
	} {
		if _, err := Create(c.sub, c.name, nil, new(MemoryControlStore)); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(%q, %q) = %v, want ErrInvalidName", c.sub, c.name, err)
		}
	}
	if _, err := Create("tcp", "cc", nil, nil); err == nil {
		t.Error("Create with a nil store succeeded")
	}
	if _, err := Create("tcp", "cc", nil, new(MemoryControlStore), WithDatasetOps(nil)); err == nil {
		t.Error("Create with nil dataset ops succeeded")
	}

	bad := new(MemoryControlStore)
	bad.FailLoads(errInjected)
	if _, err := Create("tcp", "cc", nil, bad); !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "loading control block") {
		t.Errorf("load failure: %v", err)
	}

	ops := new(recordingOps)
	ops.failOn("create", errInjected)
	fresh := new(MemoryControlStore)
	if m, err := Create("tcp", "cc", ops, fresh); !errors.Is(err, errInjected) || m != nil {
		t.Errorf("create callback failure: %v, %v", m, err)
	}
	if len(fresh.History()) != 0 {
		t.Errorf("failed Create wrote %v", fresh.History())
	}
}

func TestInitAndReInit(t *testing.T) {
	m, store, _ := newTestModel(t)
	if err := m.Init(Options{CollabPermille: 1001}); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "initializing tcp/cc") {
		t.Fatalf("invalid Init = %v", err)
	}
	if m.State() != StateCreated || len(store.History()) != 1 {
		t.Fatalf("invalid Init changed the model")
	}
	mustDo(t, m.Init(Options{MaxMode: ModeCollaboration}))
	if m.Controller() == nil || m.Controller().Config().MaxMode != ModeCollaboration {
		t.Fatalf("controller not configured: %+v", m.Controller())
	}
	opts, ctl := m.Options(), store.Current()
	if err := m.ReInit(Options{HoldoutPermille: 2000}); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "HoldoutPermille") {
		t.Fatalf("invalid ReInit = %v", err)
	}
	if m.Options() != opts || store.Current() != ctl {
		t.Fatalf("invalid ReInit changed the model")
	}
	mustDo(t, m.SetMode(ModeCollaboration, "test"))
	c := m.Controller()
	mustDo(t, m.ReInit(Options{CollabPermille: 100, InitialMode: ModeEmergency}))
	got := store.Current()
	if got.CollabPermille != 100 || got.HoldoutPermille != DefaultHoldoutPermille || got.Mode != ModeEmergency {
		t.Errorf("after ReInit: %v", got)
	}
	if m.Options().CollabPermille != 100 || m.Options().MaxMode != ModeRecommendation {
		t.Errorf("options after ReInit: %+v", m.Options())
	}
	if m.Controller() == c {
		t.Error("ReInit kept the old controller")
	}
}

func TestSetMode(t *testing.T) {
	m, store, _ := modelIn(t, StateInitialized)
	mustDo(t, m.ReInit(Options{MaxMode: ModeCollaboration}))
	mustDo(t, m.Start(RunConfig{}))
	mustDo(t, m.RenewLease(1))
	ctl := store.Current()
	err := m.SetMode(ModeRecommendation, "too far")
	if !errors.Is(err, ErrAboveMaxMode) || !strings.Contains(err.Error(), "RECOMMENDATION") || !strings.Contains(err.Error(), "COLLABORATION") {
		t.Errorf("above MaxMode: %v", err)
	}
	for _, bad := range []Mode{ModeUnknown, Mode(5), Mode(100)} {
		if err := m.SetMode(bad, "bad"); !errors.Is(err, ErrInvalidMode) {
			t.Errorf("SetMode(%v) = %v, want ErrInvalidMode", bad, err)
		}
	}
	if store.Current() != ctl || m.Mode() != ModeLearning {
		t.Fatalf("failed SetMode changed the model: %v", store.Current())
	}
	m.Controller().Observe(Outcome{Arm: ArmShadow, Reward: 1})
	mustDo(t, m.SetMode(ModeEmergency, "operator: maintenance"))
	if m.Mode() != ModeEmergency || store.Current().Mode != ModeEmergency {
		t.Errorf("mode %v", m.Mode())
	}
	if n := m.Controller().Evidence().Arms[ArmShadow].N; n != 0 {
		t.Errorf("evidence survived a mode change: %d outcomes", n)
	}
	last := m.ModeHistory()[len(m.ModeHistory())-1]
	if last.From != ModeLearning || last.To != ModeEmergency || last.Reason != "operator: maintenance" || last.Time.IsZero() {
		t.Errorf("history %+v", last)
	}
}

func TestApplyDecision(t *testing.T) {
	m, store, _ := modelIn(t, StateRunning)
	mustDo(t, m.ApplyDecision(Decision{From: ModeLearning, To: ModeLearning}))
	writes := len(store.History())
	mustDo(t, m.ApplyDecision(Decision{From: ModeLearning, To: ModeCollaboration, Changed: true, Reason: "evidence"}))
	if m.Mode() != ModeCollaboration || len(store.History()) != writes+1 {
		t.Fatalf("decision not applied: %v", m.Mode())
	}
	mustDo(t, m.SetMode(ModeEmergency, "operator"))
	err := m.ApplyDecision(Decision{From: ModeCollaboration, To: ModeRecommendation, Changed: true})
	if !errors.Is(err, ErrModeChanged) || m.Mode() != ModeEmergency {
		t.Errorf("stale decision: %v, mode %v", err, m.Mode())
	}
}

func TestLeaseLapseTripsEmergency(t *testing.T) {
	m, _, _ := modelIn(t, StateRunning) // lease renewed at 1s, expires at 4s
	mustDo(t, m.SetMode(ModeCollaboration, "test"))
	mustDo(t, m.RenewLease(3e9)) // in time
	if _, tripped := m.Controller().Tripped(); tripped {
		t.Fatal("tripped by a timely renewal")
	}
	mustDo(t, m.RenewLease(10e9)) // expired at 6s
	reason, tripped := m.Controller().Tripped()
	if !tripped || !strings.Contains(reason, "lease lost") || !strings.Contains(reason, "4s") {
		t.Fatalf("late renewal: tripped %v %q", tripped, reason)
	}
	d, err := m.CorrectSystemState()
	if err != nil || d.To != ModeEmergency || !d.Changed || m.Mode() != ModeEmergency {
		t.Fatalf("CorrectSystemState = %v, %v; mode %v", d, err, m.Mode())
	}
	// EMERGENCY is sticky: the controller never leaves it.
	if d, _ := m.CorrectSystemState(); d.Changed || m.Mode() != ModeEmergency {
		t.Errorf("left EMERGENCY: %v", d)
	}
	// Only an operator does.
	mustDo(t, m.SetMode(ModeLearning, "operator: agent restarted"))
	if _, tripped := m.Controller().Tripped(); tripped {
		t.Error("still tripped after the operator's SetMode")
	}
}

func TestConcurrentUse(t *testing.T) {
	m, store, _ := modelIn(t, StateRunning)
	var wg sync.WaitGroup
	errc := make(chan error, 1000)
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				switch g {
				case 0:
					if err := m.RenewLease(uint64(2e9 + i)); err != nil {
						errc <- err
					}
				case 1:
					mode := []Mode{ModeLearning, ModeCollaboration, ModeRecommendation}[i%3]
					if err := m.SetMode(mode, "flip"); err != nil {
						errc <- err
					}
				case 2:
					_ = m.Control()
					_ = m.Options()
					_, _ = m.Mode(), m.State()
					if _, err := m.GetSystemState(); err != nil {
						errc <- err
					}
				case 3:
					if _, err := m.ErrorBackpropagation(Feedback{Arm: ArmModel, Reward: 1, Mode: m.Mode()}); err != nil {
						errc <- err
					}
					if _, err := m.EstimateSystemState(); err != nil {
						errc <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if store.Current() != m.Control() {
		t.Errorf("store %v, model %v", store.Current(), m.Control())
	}
}
