package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// wrappers lists the RFC-API methods with the states they run in,
// written out independently of the implementation.
var wrappers = []struct {
	name    string
	allowed []State
	call    func(*Model) error
}{
	{"GetSystemState", []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.GetSystemState(); return err }},
	{"GetDataset", []State{StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.GetDataset(Request{}); return err }},
	{"DiscardDataset", []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { return m.DiscardDataset() }},
	{"PreprocessData", []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { return m.PreprocessData(&Dataset{}) }},
	{"PublishData", []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.PublishData(&Dataset{}); return err }},
	{"PreprocessRecommendation", []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error {
			_, err := m.PreprocessRecommendation(Recommendation{Key: "k", Value: "v"})
			return err
		}},
	{"ApplyRecommendation", []State{StateStarted, StateRunning},
		func(m *Model) error { return m.ApplyRecommendation(Recommendation{Key: "k", Value: "v"}) }},
	{"ExecuteOperation", []State{StateStarted, StateRunning},
		func(m *Model) error { return m.ExecuteOperation(Recommendation{}, Request{}) }},
	{"EstimateEfficiency", []State{StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.EstimateEfficiency(Recommendation{}, Request{}); return err }},
	{"ErrorBackpropagation", []State{StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.ErrorBackpropagation(Feedback{}); return err }},
	{"EstimateSystemState", []State{StateInitialized, StateStarted, StateRunning, StateStopped},
		func(m *Model) error { _, err := m.EstimateSystemState(); return err }},
	{"CorrectSystemState", []State{StateStarted, StateRunning},
		func(m *Model) error { _, err := m.CorrectSystemState(); return err }},
}

func TestWrappersCheckState(t *testing.T) {
	for from := StateCreated; from < StateCount; from++ {
		for _, w := range wrappers {
			t.Run(fmt.Sprintf("%v/%s", from, w.name), func(t *testing.T) {
				m, store, _ := modelIn(t, from)
				ctl := store.Current()
				err := w.call(m)
				if slices.Contains(w.allowed, from) {
					if errors.Is(err, ErrInvalidState) && strings.Contains(err.Error(), "model is") || errors.Is(err, ErrDestroyed) {
						t.Fatalf("%s refused in %v: %v", w.name, from, err)
					}
					return
				}
				want := ErrInvalidState
				if from == StateShuttingDown {
					want = ErrDestroyed
				}
				if !errors.Is(err, want) {
					t.Fatalf("%s in %v = %v, want %v", w.name, from, err, want)
				}
				if !strings.Contains(err.Error(), "tcp/cc") || from != StateShuttingDown && !strings.Contains(err.Error(), "model is "+from.String()) {
					t.Errorf("error %q does not name the model and its state", err)
				}
				if store.Current() != ctl || m.State() != from {
					t.Errorf("refused %s changed the model", w.name)
				}
			})
		}
	}
}

// streamOps extracts 4-byte records from a slice, as a ring buffer
// consumer would: a portion is complete when full, partial otherwise.
type streamOps struct {
	GenericDatasetOps
	mu        sync.Mutex
	pending   [][]byte
	lost      uint64
	published []uint64
}

func newStreamOps(records ...string) *streamOps {
	s := &streamOps{GenericDatasetOps: GenericDatasetOps{Type: DatasetStructure, RecordSize: 4, Capacity: 3}}
	for _, r := range records {
		s.pending = append(s.pending, []byte(r))
	}
	return s
}

func (s *streamOps) Extract(_ *Model, ds *Dataset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.pending) > 0 && !ds.Full() {
		if err := ds.Append(s.pending[0]); err != nil {
			return err
		}
		s.pending = s.pending[1:]
	}
	ds.Lost += s.lost
	s.lost = 0
	return ds.Extracted(!ds.Full())
}

func (s *streamOps) PublishData(_ *Model, ds *Dataset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.published = append(s.published, ds.PortionOffset)
	return nil
}

func records(ds *Dataset) string {
	var out []string
	for i, r := range ds.All() {
		out = append(out, fmt.Sprintf("%d:%s", i, r))
	}
	return strings.Join(out, " ")
}

func TestDatasetFlow(t *testing.T) {
	src := newStreamOps("aaaa", "bbbb", "cccc", "dddd", "eeee")
	src.lost = 2
	m, _, _ := newTestModel(t, WithDatasetOps(src))
	mustDo(t, m.Init(Options{}))
	if _, err := m.GetDataset(Request{}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("GetDataset before Start: %v", err)
	}
	if err := m.DiscardDataset(); !errors.Is(err, ErrNoDataset) {
		t.Errorf("DiscardDataset without a dataset: %v", err)
	}
	mustDo(t, m.Start(RunConfig{}))

	ds, err := m.GetDataset(Request{})
	mustDo(t, err)
	if ds.State != DatasetExtractedCompletely || records(ds) != "0:aaaa 1:bbbb 2:cccc" || ds.Lost != 2 {
		t.Fatalf("first portion %v %q lost %d", ds.State, records(ds), ds.Lost)
	}
	mustDo(t, m.PreprocessData(ds))
	n, err := m.PublishData(ds)
	mustDo(t, err)
	want := Notification{Kind: NotifyDataset, Subsystem: "tcp", Model: "cc", Mode: ModeLearning, Generation: 3,
		DatasetState: DatasetExtractedCompletely, PortionOffset: 0, PortionSize: 3, Lost: 2}
	if n != want {
		t.Errorf("notification %+v\nwant %+v", n, want)
	}
	if _, err := m.GetDataset(Request{}); !errors.Is(err, ErrDatasetBusy) || !strings.Contains(err.Error(), "EXTRACTED_COMPLETELY") {
		t.Errorf("GetDataset before discarding: %v", err)
	}
	mustDo(t, m.DiscardDataset())

	ds2, err := m.GetDataset(Request{})
	mustDo(t, err)
	if ds2 != ds {
		t.Error("dataset not reused")
	}
	if ds.State != DatasetExtractedPartially || records(ds) != "3:dddd 4:eeee" || ds.Lost != 0 {
		t.Fatalf("second portion %v %q", ds.State, records(ds))
	}
	// A partial portion is continued.
	src.mu.Lock()
	src.pending = append(src.pending, []byte("ffff"), []byte("gggg"))
	src.mu.Unlock()
	_, err = m.GetDataset(Request{})
	mustDo(t, err)
	if ds.State != DatasetExtractedCompletely || records(ds) != "3:dddd 4:eeee 5:ffff" {
		t.Fatalf("continued portion %v %q", ds.State, records(ds))
	}
	mustDo(t, m.DiscardDataset())
	if err := m.DiscardDataset(); !errors.Is(err, ErrIllegalTransition) {
		t.Errorf("discarding twice: %v", err)
	}
	// Still readable after Stop, to drain.
	mustDo(t, m.Stop())
	_, err = m.GetDataset(Request{})
	mustDo(t, err)
	if records(ds) != "6:gggg" {
		t.Errorf("after Stop %q", records(ds))
	}
	if !slices.Equal(src.published, []uint64{0}) {
		t.Errorf("published %v", src.published)
	}

	mustDo(t, m.Destroy())
	if ds.State != DatasetObsolete || ds.Data != nil {
		t.Errorf("dataset after Destroy: %v, %d bytes", ds.State, len(ds.Data))
	}
	if _, err := m.GetDataset(Request{}); !errors.Is(err, ErrDestroyed) {
		t.Errorf("GetDataset after Destroy: %v", err)
	}
}

func TestGenericDatasetOps(t *testing.T) {
	m, _, _ := modelIn(t, StateRunning)
	ds, err := m.GetDataset(Request{})
	mustDo(t, err)
	if ds.Type != DatasetEmpty || ds.State != DatasetExtractedCompletely {
		t.Errorf("generic dataset %v %v", ds.Type, ds.State)
	}
	mustDo(t, m.PreprocessData(ds))

	m, _, _ = newTestModel(t, WithDatasetOps(GenericDatasetOps{Type: DatasetStructure, RecordSize: 8, Capacity: 2}))
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	ds, err = m.GetDataset(Request{})
	if !errors.Is(err, ErrNotSupported) || ds == nil || ds.State != DatasetClean {
		t.Errorf("generic Extract of a STRUCTURE dataset: %v, %+v", err, ds)
	}
	if err := m.PreprocessData(ds); !errors.Is(err, ErrInvalidState) {
		t.Errorf("preprocessing a CLEAN dataset: %v", err)
	}

	m, _, _ = newTestModel(t, WithDatasetOps(GenericDatasetOps{Type: DatasetStructure, RecordSize: 0, Capacity: 2}))
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	if _, err := m.GetDataset(Request{}); !errors.Is(err, ErrInvalidDataset) {
		t.Errorf("bad layout: %v", err)
	}
}

func TestCorruptedDatasetTripsEmergency(t *testing.T) {
	for _, c := range []struct {
		name    string
		corrupt func(*Dataset)
		trips   bool
	}{
		{"clean", func(*Dataset) {}, false},
		{"some undecodable", func(ds *Dataset) { ds.Corrupted = 3 }, false},
		{"mostly undecodable", func(ds *Dataset) { ds.Corrupted = 4 }, true},
		{"inconsistent", func(ds *Dataset) { ds.Data = ds.Data[:7] }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _, _ := newTestModel(t, WithDatasetOps(newStreamOps("aaaa", "bbbb", "cccc")))
			mustDo(t, m.Init(Options{}))
			mustDo(t, m.Start(RunConfig{}))
			mustDo(t, m.RenewLease(1))
			ds, err := m.GetDataset(Request{})
			mustDo(t, err)
			c.corrupt(ds)
			err = m.PreprocessData(ds)
			if !c.trips {
				mustDo(t, err)
				if _, tripped := m.Controller().Tripped(); tripped || ds.State != DatasetExtractedCompletely {
					t.Errorf("tripped on a usable dataset (%v)", ds.State)
				}
				return
			}
			if !errors.Is(err, ErrCorruptedDataset) || ds.State != DatasetCorrupted {
				t.Fatalf("PreprocessData = %v, dataset %v", err, ds.State)
			}
			d, err := m.CorrectSystemState()
			mustDo(t, err)
			if !d.Changed || d.To != ModeEmergency || !strings.Contains(d.Reason, "corrupted data") || m.Mode() != ModeEmergency {
				t.Errorf("after a corrupted dataset: %v, mode %v", d, m.Mode())
			}
			// A corrupted dataset must be discarded before the next one.
			if _, err := m.GetDataset(Request{}); !errors.Is(err, ErrDatasetBusy) {
				t.Errorf("GetDataset on a corrupted dataset: %v", err)
			}
			mustDo(t, m.DiscardDataset())
		})
	}
}

func TestRecommendations(t *testing.T) {
	m, _, ops := modelIn(t, StateRunning)
	rec, err := m.PreprocessRecommendation(Recommendation{Key: " 10.0.0.0/8 ", Value: "bbr\n"})
	mustDo(t, err)
	if rec != (Recommendation{Key: "10.0.0.0/8", Value: "bbr", Generation: m.Control().Generation}) {
		t.Errorf("preprocessed %+v", rec)
	}
	for _, bad := range []Recommendation{{Value: "bbr"}, {Key: "k"}, {Key: "k\x00", Value: "v"}} {
		if _, err := m.PreprocessRecommendation(bad); !errors.Is(err, ErrInvalidRecommendation) {
			t.Errorf("PreprocessRecommendation(%+v) = %v", bad, err)
		}
		if err := m.ApplyRecommendation(bad); !errors.Is(err, ErrInvalidRecommendation) {
			t.Errorf("ApplyRecommendation(%+v) = %v", bad, err)
		}
	}
	mustDo(t, m.ApplyRecommendation(Recommendation{Key: "k ", Value: "cubic", Generation: 7}))
	if !slices.Equal(ops.applied, []Recommendation{{Key: "k", Value: "cubic", Generation: 7}}) {
		t.Errorf("applied %+v", ops.applied)
	}
	ops.failOn("apply", errInjected)
	if err := m.ApplyRecommendation(Recommendation{Key: "k", Value: "v"}); !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "applying a recommendation to tcp/cc") {
		t.Errorf("failing apply: %v", err)
	}
	mustDo(t, m.ExecuteOperation(Recommendation{}, Request{}))

	g, err := Create("tcp", "generic", nil, new(MemoryControlStore))
	mustDo(t, err)
	mustDo(t, g.Init(Options{}))
	mustDo(t, g.Start(RunConfig{}))
	if err := g.ApplyRecommendation(Recommendation{Key: "k", Value: "v"}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("generic ApplyRecommendation: %v", err)
	}
}

func TestErrorBackpropagation(t *testing.T) {
	m, _, _ := modelIn(t, StateRunning)
	gen := m.Control().Generation
	n, err := m.ErrorBackpropagation(Feedback{Arm: ArmShadow, Reward: 40, Predicted: 52, HasPrediction: true, Mode: ModeLearning, Generation: gen})
	mustDo(t, err)
	if !n.Accepted || n.Kind != NotifyFeedback || n.Model != "cc" || !strings.Contains(n.Message, "predicted 52.0") {
		t.Errorf("notification %+v", n)
	}
	for _, bad := range []Feedback{{Arm: Arm(9), Mode: ModeLearning}, {Arm: ArmShadow, Reward: math.NaN(), Mode: ModeLearning}} {
		if n, err := m.ErrorBackpropagation(bad); err != nil || n.Accepted || !strings.Contains(n.Message, "invalid outcome") {
			t.Errorf("invalid feedback %+v: %+v, %v", bad, n, err)
		}
	}
	n, err = m.ErrorBackpropagation(Feedback{Arm: ArmModel, Reward: 1, Mode: ModeCollaboration})
	mustDo(t, err)
	if n.Accepted || !strings.Contains(n.Message, "stale") {
		t.Errorf("feedback from another mode accepted: %+v", n)
	}
	// Back to LEARNING after a detour: feedback from the first LEARNING
	// period is stale.
	mustDo(t, m.SetMode(ModeCollaboration, "test"))
	mustDo(t, m.SetMode(ModeLearning, "test"))
	n, err = m.ErrorBackpropagation(Feedback{Arm: ArmShadow, Reward: 1, Mode: ModeLearning, Generation: gen})
	mustDo(t, err)
	if n.Accepted {
		t.Errorf("feedback from an earlier generation accepted: %+v", n)
	}
	n, err = m.ErrorBackpropagation(Feedback{Arm: ArmShadow, Reward: 1, Mode: ModeLearning, Generation: m.Control().Generation})
	mustDo(t, err)
	if !n.Accepted {
		t.Errorf("current feedback refused: %+v", n)
	}
	if got := m.Controller().Evidence().Arms[ArmShadow].N; got != 1 {
		t.Errorf("%d shadow outcomes counted, want 1", got)
	}
}

func TestEstimateEfficiency(t *testing.T) {
	m, _, _ := modelIn(t, StateRunning)
	mustDo(t, m.SetMode(ModeCollaboration, "test"))
	for i := range 10 {
		m.ErrorBackpropagation(Feedback{Arm: ArmModel, Reward: 10 + float64(i%2), Mode: ModeCollaboration})
		m.ErrorBackpropagation(Feedback{Arm: ArmControl, Reward: 5 + float64(i%2), Mode: ModeCollaboration})
	}
	m.ErrorBackpropagation(Feedback{Arm: ArmNoRec, Reward: 5, Mode: ModeCollaboration})
	eff, err := m.EstimateEfficiency(Recommendation{}, Request{})
	mustDo(t, err)
	if eff.Mode != ModeCollaboration || eff.Samples[ArmModel] != 10 || eff.Samples[ArmControl] != 10 || eff.Samples[ArmNoRec] != 1 {
		t.Errorf("samples %+v", eff)
	}
	if eff.Applied != 10.0/21 || eff.Gain.Effect != 5 || eff.Gain.Lower >= 5 || eff.Gain.Upper <= 5 {
		t.Errorf("efficiency %+v", eff)
	}
	mustDo(t, m.SetMode(ModeLearning, "test"))
	m.ErrorBackpropagation(Feedback{Arm: ArmShadow, Reward: 5, Predicted: 8, HasPrediction: true, Mode: ModeLearning})
	m.ErrorBackpropagation(Feedback{Arm: ArmShadow, Reward: 6, Predicted: 8, HasPrediction: true, Mode: ModeLearning})
	eff, err = m.EstimateEfficiency(Recommendation{}, Request{})
	mustDo(t, err)
	if eff.Gain.N != 2 || eff.Gain.Effect != 2.5 || eff.Applied != 0 {
		t.Errorf("LEARNING efficiency %+v", eff)
	}
}

func TestGetSystemState(t *testing.T) {
	m, store, _ := modelIn(t, StateRunning)
	st, err := m.GetSystemState()
	mustDo(t, err)
	if st.State != SubsystemRunning || st.Mode != ModeLearning || st.Control != store.Current() {
		t.Errorf("snapshot %+v", st)
	}
	// Another writer at the same generation: the map was tampered with.
	tampered := store.Current()
	tampered.Mode = ModeRecommendation
	store.Set(tampered)
	if _, err := m.GetSystemState(); !errors.Is(err, ErrControlMismatch) {
		t.Errorf("tampered control block: %v", err)
	}
	store.FailLoads(errInjected)
	if _, err := m.GetSystemState(); !errors.Is(err, errInjected) {
		t.Errorf("load failure: %v", err)
	}
}

// A Model driven like the daemon drives it: a better model climbs to
// RECOMMENDATION, each step written to the control block.
func TestModelPromotesBetterModel(t *testing.T) {
	m, store, _ := newTestModel(t)
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	r := rand.New(rand.NewPCG(1, 2))
	now := uint64(1e9)
	for i := 1; i <= 4000; i++ {
		if i%20 == 0 {
			now += 1e9
			mustDo(t, m.RenewLease(now))
			if _, err := m.CorrectSystemState(); err != nil {
				t.Fatal(err)
			}
		}
		ctl := m.Control()
		o := better.outcome(r, ctl.Mode)
		_, err := m.ErrorBackpropagation(Feedback{Arm: o.Arm, Reward: o.Reward, Predicted: o.Predicted,
			HasPrediction: o.HasPrediction, Mode: ctl.Mode, Generation: ctl.Generation})
		mustDo(t, err)
	}
	if m.Mode() != ModeRecommendation || store.Current().Mode != ModeRecommendation {
		t.Fatalf("mode %v, stored %v", m.Mode(), store.Current().Mode)
	}
	var path []string
	for _, h := range m.ModeHistory() {
		path = append(path, h.To.String())
	}
	if got := strings.Join(path, ","); got != "EMERGENCY,LEARNING,COLLABORATION,RECOMMENDATION" {
		t.Errorf("path %s", got)
	}
	if last := m.ModeHistory()[3]; !splitReason.MatchString(last.Reason) {
		t.Errorf("reason %q", last.Reason)
	}
}

// stateOps overrides the estimate: it always wants COLLABORATION.
type stateOps struct {
	GenericSubsystemStateOps
	corrected []Decision
}

func (s *stateOps) EstimateSystemState(m *Model) (Decision, error) {
	return Decision{From: m.Mode(), To: ModeCollaboration, Changed: m.Mode() != ModeCollaboration, Reason: "subsystem says so"}, nil
}

func (s *stateOps) CorrectSystemState(m *Model, d Decision) error {
	s.corrected = append(s.corrected, d)
	return s.GenericSubsystemStateOps.CorrectSystemState(m, d)
}

func TestSubsystemStateOpsOverride(t *testing.T) {
	so := new(stateOps)
	m, _, _ := newTestModel(t, WithSubsystemStateOps(so))
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	d, err := m.CorrectSystemState()
	mustDo(t, err)
	if m.Mode() != ModeCollaboration || len(so.corrected) != 1 || d.Reason != "subsystem says so" {
		t.Errorf("mode %v after %v", m.Mode(), so.corrected)
	}
	if got := d.String(); got != "LEARNING → COLLABORATION: subsystem says so" {
		t.Errorf("Decision.String() = %q", got)
	}
	d, err = m.CorrectSystemState()
	mustDo(t, err)
	if d.Changed || d.String() != "COLLABORATION: subsystem says so" {
		t.Errorf("second decision %q", d)
	}
	if m.SubsystemStateOps() != SubsystemStateOps(so) || m.Store() == nil {
		t.Error("accessors")
	}
}

func TestModelTrip(t *testing.T) {
	m, _, _ := newTestModel(t)
	m.Trip("before init") // no controller: nothing to trip, nothing breaks
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	m.Trip("agent gone")
	d, err := m.CorrectSystemState()
	mustDo(t, err)
	if d.To != ModeEmergency || d.Reason != "agent gone" || m.Mode() != ModeEmergency {
		t.Errorf("after Trip: %v", d)
	}
}

// failingDatasetOps fails to destroy its dataset.
type failingDatasetOps struct{ GenericDatasetOps }

func (failingDatasetOps) Destroy(*Model, *Dataset) error { return errInjected }

func TestDestroyDatasetFailureChangesNothing(t *testing.T) {
	m, store, rec := newTestModel(t, WithDatasetOps(failingDatasetOps{}))
	mustDo(t, m.Init(Options{}))
	mustDo(t, m.Start(RunConfig{}))
	_, err := m.GetDataset(Request{})
	mustDo(t, err)
	ctl := store.Current()
	err = m.Destroy()
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "destroying dataset") {
		t.Fatalf("Destroy = %v", err)
	}
	if m.State() != StateStarted || store.Current() != ctl {
		t.Errorf("failed Destroy left %v, stored %v", m.State(), store.Current())
	}
	if _, err := m.GetDataset(Request{}); errors.Is(err, ErrDestroyed) {
		t.Errorf("dataset closed by a failed Destroy: %v", err)
	}
	if !slices.Contains(rec.Calls(), "destroy") {
		t.Error("ops.Destroy not called")
	}
}

// TestPublishDataAllocates nothing: the loop publishes a portion every
// period, at up to millions of records a second, and its notification
// used to escape to the heap through the ops interface.
func TestPublishDataAllocatesNothing(t *testing.T) {
	m, _, _ := modelIn(t, StateRunning)
	ds := &Dataset{}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := m.PublishData(ds); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("PublishData: %v allocations per call, want 0", n)
	}
}
