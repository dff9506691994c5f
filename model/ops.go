package model

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Recommendation is a learner's recommendation for one subject (the RFC's
// ml_lib_user_space_recommendation): apply Value to Key.
type Recommendation struct {
	Key   string // the subject, e.g. a remote prefix "10.1.0.0/16"
	Value string // what to apply, e.g. a congestion control "bbr"
	// Generation is the control block generation the recommendation was
	// made under; zero means the current one.
	Generation uint32
}

// RequestConfig is the RFC's ml_lib_request_config: how a dataset request
// is configured.
type RequestConfig struct {
	Type  RequestConfigType
	State RequestConfigState
}

// Request is a user-space agent's request (the RFC's
// ml_lib_user_space_request), given to GetDataset, ExecuteOperation and
// EstimateEfficiency.
type Request struct {
	Config RequestConfig
	// Key restricts the request to one subject; empty means all.
	Key string
	// MaxRecords caps the portion; zero means the dataset's capacity.
	MaxRecords int
	// Timeout bounds how long GetDataset waits for records; zero means
	// take what is there.
	Timeout time.Duration
}

// NotificationKind says what a Notification is about.
type NotificationKind uint32

// Notification kinds.
const (
	NotifyUnknown  NotificationKind = 0
	NotifyDataset  NotificationKind = 1 // a dataset portion is ready (PublishData)
	NotifyFeedback NotificationKind = 2 // an outcome was fed back (ErrorBackpropagation)
)

var notificationKindNames = []string{"unknown", "dataset", "feedback"}

// String returns the kind's name.
func (k NotificationKind) String() string {
	return enumName(notificationKindNames, uint32(k), "NotificationKind")
}

// Notification tells the user-space agent about new data or feedback (the
// RFC's ml_lib_user_space_notification). The Model fills in what it
// knows; the operation may add to it and deliver it.
type Notification struct {
	Kind       NotificationKind
	Subsystem  string
	Model      string
	Mode       Mode
	Generation uint32

	// Dataset notifications: the portion published.
	DatasetState  DatasetState
	PortionOffset uint64
	PortionSize   uint32
	Lost          uint64
	Corrupted     uint64

	// Feedback notifications: whether the outcome was counted as evidence
	// for the current mode (false for stale outcomes).
	Accepted bool

	Message string
}

// Feedback is one outcome fed back to the model (the RFC's
// ml_lib_backpropagation_feedback): what happened, and what the learner
// had predicted.
type Feedback struct {
	Arm Arm
	// Reward is the observed outcome, larger is better.
	Reward float64
	// Predicted is the learner's predicted reward of its recommendation;
	// meaningful when HasPrediction. For ArmShadow outcomes it is the
	// counterfactual the LEARNING mode is judged on.
	Predicted     float64
	HasPrediction bool
	// Key is the subject the outcome is about, and Value what the kernel
	// applied to it (the algorithm a connection ran, for example).
	Key, Value string
	// Mode and Generation are those in force at the decision (copied from
	// the record header). Feedback from another mode, or from before the
	// current mode was entered, is not evidence for the current mode.
	Mode       Mode
	Generation uint32
}

// Outcome returns the feedback as a controller outcome.
func (f Feedback) Outcome() Outcome {
	return Outcome{Arm: f.Arm, Reward: f.Reward, Predicted: f.Predicted, HasPrediction: f.HasPrediction}
}

// Efficiency is the estimated effect of the model in its current mode (the
// RFC's estimate_ml_model_efficiency).
type Efficiency struct {
	Mode Mode
	// Samples counts the outcomes observed per arm in this mode.
	Samples [ArmCount]int
	// Applied is the share of those outcomes where the recommendation was
	// applied (ArmModel).
	Applied float64
	// Gain compares the model with the default: in LEARNING the learner's
	// predicted reward against the reward observed under the default
	// (shadow outcomes), otherwise ArmModel against ArmControl.
	Gain Comparison
}

// SystemState is a snapshot of a subsystem's state (the RFC's
// ml_lib_subsystem_state, as returned by get_system_state).
type SystemState struct {
	State SubsystemState
	Mode  Mode
	// Control is the control block as read back from the store: what the
	// kernel sees.
	Control Control
	// Arms counts applier invocations per arm, and Lost the records the
	// collector failed to reserve, when the subsystem reads them (from its
	// pinned stats and lost maps).
	Arms [ArmCount]uint64
	Lost uint64
	// Values holds subsystem-specific gauges.
	Values map[string]float64
}

// ModelOps is the RFC's ml_lib_model_operations: what a subsystem
// specializes. Embed GenericModelOps and override what differs.
//
// The Model calls Create, Init, ReInit, Start, Stop and Destroy while it
// holds its lifecycle lock: they may call the Model's getters but not its
// lifecycle methods, SetMode or ApplyDecision. A lifecycle callback that
// fails leaves the model as it was and may be called again on a retry.
type ModelOps interface {
	Create(m *Model) error
	Init(m *Model, opts Options) error
	ReInit(m *Model, opts Options) error
	Start(m *Model, cfg RunConfig) error
	Stop(m *Model) error
	Destroy(m *Model) error
	GetSystemState(m *Model) (SystemState, error)
	// GetDataset fills ds, which is CLEAN or EXTRACTED_PARTIALLY, with
	// the next portion of the record stream.
	GetDataset(m *Model, ds *Dataset, req Request) error
	PreprocessData(m *Model, ds *Dataset) error
	// PublishData tells the agent about ds; n is prepared by the Model.
	PublishData(m *Model, ds *Dataset, n *Notification) error
	// PreprocessRecommendation validates and clamps rec in place.
	PreprocessRecommendation(m *Model, rec *Recommendation) error
	EstimateSystemState(m *Model) (Decision, error)
	// ApplyRecommendation writes rec where the applier reads it.
	ApplyRecommendation(m *Model, rec Recommendation) error
	ExecuteOperation(m *Model, rec Recommendation, req Request) error
	EstimateEfficiency(m *Model, rec Recommendation, req Request) (Efficiency, error)
	// ErrorBackpropagation hands an outcome back; n is prepared by the
	// Model.
	ErrorBackpropagation(m *Model, fb Feedback, n *Notification) error
	// CorrectSystemState estimates and applies the mode decision.
	CorrectSystemState(m *Model) (Decision, error)
}

// SubsystemStateOps is the RFC's ml_lib_subsystem_state_operations.
// Embed GenericSubsystemStateOps and override what differs.
type SubsystemStateOps interface {
	Init(m *Model) error
	Destroy(m *Model) error
	// CheckState validates a snapshot.
	CheckState(m *Model, st *SystemState) error
	SnapshotState(m *Model) (SystemState, error)
	EstimateSystemState(m *Model) (Decision, error)
	// CorrectSystemState applies a decision of EstimateSystemState.
	CorrectSystemState(m *Model, d Decision) error
}

// DatasetOps is the RFC's ml_lib_dataset_operations. Embed
// GenericDatasetOps and override what differs (Extract at least).
//
// The Model calls them with its dataset lock held: they must not call the
// Model's lifecycle methods, SetMode, ApplyDecision or its dataset
// methods. The Model's getters are fine.
type DatasetOps interface {
	// Init allocates ds (state UNKNOWN) to ALLOCATED.
	Init(m *Model, ds *Dataset) error
	// Destroy releases ds.
	Destroy(m *Model, ds *Dataset) error
	// Extract moves records from the kernel into ds, and marks it
	// EXTRACTED_PARTIALLY, EXTRACTED_COMPLETELY or EXTRACTION_FAILURE.
	Extract(m *Model, ds *Dataset) error
	PreprocessData(m *Model, ds *Dataset) error
	PublishData(m *Model, ds *Dataset) error
}

// GenericModelOps implements ModelOps with the RFC's generic_* behaviour:
// lifecycle callbacks that delegate to the subsystem-state operations,
// dataset operations that delegate to the DatasetOps, and the mode
// controller for estimating and correcting the mode. ApplyRecommendation
// has no default and returns ErrNotSupported.
type GenericModelOps struct{}

var _ ModelOps = GenericModelOps{}

// Create does nothing.
func (GenericModelOps) Create(*Model) error { return nil }

// Init initializes the subsystem state.
func (GenericModelOps) Init(m *Model, _ Options) error { return m.SubsystemStateOps().Init(m) }

// ReInit does nothing: the Model applies the options.
func (GenericModelOps) ReInit(*Model, Options) error { return nil }

// Start does nothing.
func (GenericModelOps) Start(*Model, RunConfig) error { return nil }

// Stop does nothing: the control block already tells the kernel.
func (GenericModelOps) Stop(*Model) error { return nil }

// Destroy destroys the subsystem state.
func (GenericModelOps) Destroy(m *Model) error { return m.SubsystemStateOps().Destroy(m) }

// GetSystemState takes a snapshot and checks it.
func (GenericModelOps) GetSystemState(m *Model) (SystemState, error) {
	so := m.SubsystemStateOps()
	st, err := so.SnapshotState(m)
	if err != nil {
		return SystemState{}, err
	}
	if err := so.CheckState(m, &st); err != nil {
		return st, err
	}
	return st, nil
}

// GetDataset extracts through the dataset operations.
func (GenericModelOps) GetDataset(m *Model, ds *Dataset, _ Request) error {
	return m.DatasetOps().Extract(m, ds)
}

// PreprocessData preprocesses through the dataset operations.
func (GenericModelOps) PreprocessData(m *Model, ds *Dataset) error {
	return m.DatasetOps().PreprocessData(m, ds)
}

// PublishData publishes through the dataset operations.
func (GenericModelOps) PublishData(m *Model, ds *Dataset, _ *Notification) error {
	return m.DatasetOps().PublishData(m, ds)
}

// PreprocessRecommendation trims Key and Value, rejects empty ones and
// ones with control characters, and stamps the current generation when
// Generation is zero.
func (GenericModelOps) PreprocessRecommendation(m *Model, rec *Recommendation) error {
	rec.Key = strings.TrimSpace(rec.Key)
	rec.Value = strings.TrimSpace(rec.Value)
	switch {
	case rec.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidRecommendation)
	case rec.Value == "":
		return fmt.Errorf("%w: empty value for key %q", ErrInvalidRecommendation, rec.Key)
	case strings.ContainsFunc(rec.Key+rec.Value, unicode.IsControl):
		return fmt.Errorf("%w: control character in %q=%q", ErrInvalidRecommendation, rec.Key, rec.Value)
	}
	if rec.Generation == 0 {
		rec.Generation = m.Control().Generation
	}
	return nil
}

// EstimateSystemState asks the subsystem-state operations.
func (GenericModelOps) EstimateSystemState(m *Model) (Decision, error) {
	return m.SubsystemStateOps().EstimateSystemState(m)
}

// ApplyRecommendation has no generic implementation: the subsystem writes
// its recommendation map.
func (GenericModelOps) ApplyRecommendation(*Model, Recommendation) error {
	return fmt.Errorf("%w: the subsystem must override ApplyRecommendation", ErrNotSupported)
}

// ExecuteOperation does nothing: the BPF applier executes at the hook,
// following the mode in the control block.
func (GenericModelOps) ExecuteOperation(*Model, Recommendation, Request) error { return nil }

// EstimateEfficiency reports the controller's evidence for the current
// mode; rec and req are not used.
func (GenericModelOps) EstimateEfficiency(m *Model, _ Recommendation, _ Request) (Efficiency, error) {
	c := m.Controller()
	if c == nil {
		return Efficiency{}, fmt.Errorf("%w: no mode controller before Init", ErrInvalidState)
	}
	ev := c.Evidence()
	eff := Efficiency{Mode: m.Mode(), Gain: ev.Split}
	if eff.Mode == ModeLearning {
		eff.Gain = ev.Shadow
	}
	total := 0
	for a, s := range ev.Arms {
		eff.Samples[a] = s.N
		total += s.N
	}
	if total > 0 {
		eff.Applied = float64(ev.Arms[ArmModel].N) / float64(total)
	}
	return eff, nil
}

// ErrorBackpropagation gives the outcome to the mode controller, unless it
// is stale: from another mode, or from before the current mode was
// entered.
func (GenericModelOps) ErrorBackpropagation(m *Model, fb Feedback, n *Notification) error {
	c := m.Controller()
	if c == nil {
		return fmt.Errorf("%w: no mode controller before Init", ErrInvalidState)
	}
	if fb.Arm >= ArmCount || !finite(fb.Reward) {
		n.Accepted = false
		n.Message = fmt.Sprintf("invalid outcome ignored: arm %v, reward %v", fb.Arm, fb.Reward)
		return nil
	}
	if reason, stale := m.staleFeedback(fb); stale {
		n.Accepted = false
		n.Message = "stale feedback ignored: " + reason
		return nil
	}
	c.Observe(fb.Outcome())
	n.Accepted = true
	n.Message = fmt.Sprintf("%v outcome %s", fb.Arm, fmtNum(fb.Reward))
	if fb.HasPrediction {
		n.Message += fmt.Sprintf(", predicted %s (error %s)", fmtNum(fb.Predicted), fmtNum(fb.Predicted-fb.Reward))
	}
	return nil
}

// CorrectSystemState estimates the mode and has the subsystem-state
// operations apply the decision.
func (GenericModelOps) CorrectSystemState(m *Model) (Decision, error) {
	d, err := m.EstimateSystemState()
	if err != nil {
		return d, err
	}
	return d, m.SubsystemStateOps().CorrectSystemState(m, d)
}

// GenericSubsystemStateOps implements SubsystemStateOps with the RFC's
// generic behaviour: the snapshot is the control block read back from the
// store, the estimate is the mode controller's decision.
type GenericSubsystemStateOps struct{}

var _ SubsystemStateOps = GenericSubsystemStateOps{}

// Init does nothing.
func (GenericSubsystemStateOps) Init(*Model) error { return nil }

// Destroy does nothing.
func (GenericSubsystemStateOps) Destroy(*Model) error { return nil }

// CheckState checks that the snapshot's states are known, and that the
// control block read back matches what the model wrote at the same
// generation (another writer or a tampered map otherwise).
func (GenericSubsystemStateOps) CheckState(m *Model, st *SystemState) error {
	if st.State == SubsystemUnknown || st.State > SubsystemStopped {
		return fmt.Errorf("checking state: unknown subsystem state %v", st.State)
	}
	mine := m.Control()
	if st.Control.Generation == mine.Generation && !sameButLease(st.Control, mine) {
		return fmt.Errorf("checking state: %w at generation %d: read %v, wrote %v",
			ErrControlMismatch, mine.Generation, st.Control, mine)
	}
	return nil
}

// SnapshotState reads the control block back from the store.
func (GenericSubsystemStateOps) SnapshotState(m *Model) (SystemState, error) {
	ctl, err := m.store.LoadControl()
	if err != nil {
		return SystemState{}, fmt.Errorf("loading control block: %w", err)
	}
	return SystemState{State: m.State().Subsystem(), Mode: m.Mode(), Control: ctl}, nil
}

// EstimateSystemState returns the mode controller's decision for the
// current mode.
func (GenericSubsystemStateOps) EstimateSystemState(m *Model) (Decision, error) {
	c := m.Controller()
	if c == nil {
		return Decision{}, fmt.Errorf("%w: no mode controller before Init", ErrInvalidState)
	}
	return c.Decide(m.Mode()), nil
}

// CorrectSystemState applies d with Model.ApplyDecision.
func (GenericSubsystemStateOps) CorrectSystemState(m *Model, d Decision) error {
	return m.ApplyDecision(d)
}

// GenericDatasetOps implements DatasetOps with the RFC's generic
// behaviour. Its fields give the layout Init allocates; the zero value
// allocates an EMPTY dataset. Extract has no default except for EMPTY
// datasets.
type GenericDatasetOps struct {
	Type       DatasetType
	RecordSize int // bytes per record
	Capacity   int // records per portion
}

var _ DatasetOps = GenericDatasetOps{}

// Init allocates ds with the configured layout.
func (g GenericDatasetOps) Init(_ *Model, ds *Dataset) error {
	typ := g.Type
	if typ == DatasetUnknown {
		typ = DatasetEmpty
	}
	return ds.Allocate(typ, g.RecordSize, g.Capacity)
}

// Destroy discards ds unless it already is, and releases its memory.
func (GenericDatasetOps) Destroy(_ *Model, ds *Dataset) error {
	if ds.State != DatasetObsolete && ds.State != DatasetStateUnknown {
		if err := ds.Discard(); err != nil {
			return err
		}
	}
	ds.Data, ds.AllocatedSize = nil, 0
	return nil
}

// Extract completes an EMPTY dataset, which has nothing to extract; other
// types need the subsystem's own Extract.
func (GenericDatasetOps) Extract(_ *Model, ds *Dataset) error {
	if ds.Type == DatasetEmpty {
		return ds.Extracted(false)
	}
	return fmt.Errorf("extracting %v dataset: %w: the subsystem must override Extract", ds.Type, ErrNotSupported)
}

// PreprocessData checks an extracted portion: its data must match its
// record count, and no more than half of the records seen may have failed
// to decode. A portion failing either check is marked CORRUPTED.
func (GenericDatasetOps) PreprocessData(_ *Model, ds *Dataset) error {
	if ds.State != DatasetExtractedPartially && ds.State != DatasetExtractedCompletely {
		return fmt.Errorf("preprocessing dataset: %w: dataset is %v, want EXTRACTED_PARTIALLY or EXTRACTED_COMPLETELY",
			ErrInvalidState, ds.State)
	}
	problem := ds.Check()
	if seen := uint64(ds.PortionSize) + ds.Corrupted; problem == nil && 2*ds.Corrupted > seen {
		problem = fmt.Errorf("%w: %d of %d records failed to decode", ErrCorruptedDataset, ds.Corrupted, seen)
	}
	if problem == nil {
		return nil
	}
	if err := ds.Corrupt(); err != nil {
		return err
	}
	return fmt.Errorf("preprocessing dataset at offset %d: %w", ds.PortionOffset, problem)
}

// PublishData does nothing: there is no agent to notify generically.
func (GenericDatasetOps) PublishData(*Model, *Dataset) error { return nil }
