package model

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

var errInjected = errors.New("injected failure")

// recordingOps records the lifecycle callbacks and can fail any of them.
type recordingOps struct {
	GenericModelOps
	mu      sync.Mutex
	calls   []string
	fail    map[string]error
	applied []Recommendation
}

func (r *recordingOps) hook(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, name)
	return r.fail[name]
}

func (r *recordingOps) failOn(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail == nil {
		r.fail = map[string]error{}
	}
	r.fail[name] = err
}

func (r *recordingOps) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recordingOps) Create(*Model) error { return r.hook("create") }

func (r *recordingOps) Init(m *Model, o Options) error {
	if err := r.hook("init"); err != nil {
		return err
	}
	return r.GenericModelOps.Init(m, o)
}

func (r *recordingOps) ReInit(*Model, Options) error  { return r.hook("re_init") }
func (r *recordingOps) Start(*Model, RunConfig) error { return r.hook("start") }
func (r *recordingOps) Stop(*Model) error             { return r.hook("stop") }

func (r *recordingOps) Destroy(m *Model) error {
	if err := r.hook("destroy"); err != nil {
		return err
	}
	return r.GenericModelOps.Destroy(m)
}

func (r *recordingOps) ApplyRecommendation(_ *Model, rec Recommendation) error {
	if err := r.hook("apply"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, rec)
	return nil
}

// newTestModel creates tcp/cc over a fresh memory store.
func newTestModel(t *testing.T, opts ...CreateOption) (*Model, *MemoryControlStore, *recordingOps) {
	t.Helper()
	store := new(MemoryControlStore)
	ops := new(recordingOps)
	m, err := Create("tcp", "cc", ops, store, opts...)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return m, store, ops
}

// modelIn returns a model brought to state s by the usual path (a zero
// Model for StateUnknown).
func modelIn(t *testing.T, s State) (*Model, *MemoryControlStore, *recordingOps) {
	t.Helper()
	if s == StateUnknown {
		return new(Model), new(MemoryControlStore), new(recordingOps)
	}
	m, store, ops := newTestModel(t)
	steps := map[State][]func() error{
		StateCreated:      nil,
		StateInitialized:  {func() error { return m.Init(Options{}) }},
		StateStarted:      {func() error { return m.Init(Options{}) }, func() error { return m.Start(RunConfig{}) }},
		StateRunning:      {func() error { return m.Init(Options{}) }, func() error { return m.Start(RunConfig{}) }, func() error { return m.RenewLease(1e9) }},
		StateStopped:      {func() error { return m.Init(Options{}) }, func() error { return m.Start(RunConfig{}) }, func() error { return m.RenewLease(1e9) }, m.Stop},
		StateShuttingDown: {func() error { return m.Init(Options{}) }, m.Destroy},
	}
	for _, step := range steps[s] {
		if err := step(); err != nil {
			t.Fatalf("bringing the model to %v: %v", s, err)
		}
	}
	if m.State() != s {
		t.Fatalf("model is %v, want %v", m.State(), s)
	}
	return m, store, ops
}
