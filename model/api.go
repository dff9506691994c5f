package model

import (
	"fmt"
	"slices"
	"strings"
)

// States in which the wrappers below may run.
var (
	statesAlive  = []State{StateCreated, StateInitialized, StateStarted, StateRunning, StateStopped}
	statesInited = []State{StateInitialized, StateStarted, StateRunning, StateStopped}
	statesData   = []State{StateStarted, StateRunning, StateStopped}
	statesActive = []State{StateStarted, StateRunning}
)

// require returns an error unless the model is in one of want; verb and
// preposition name the operation ("applying a recommendation to").
func (m *Model) require(verb string, want []State) error {
	st := m.State()
	if slices.Contains(want, st) {
		return nil
	}
	if st == StateShuttingDown {
		return fmt.Errorf("%s %s: %w", verb, m, ErrDestroyed)
	}
	names := make([]string, len(want))
	for i, s := range want {
		names[i] = s.String()
	}
	return fmt.Errorf("%s %s: %w: model is %v, want %s", verb, m, ErrInvalidState, st, strings.Join(names, ", "))
}

// GetSystemState returns a snapshot of the subsystem's state
// (get_system_state), in any state but UNKNOWN and SHUTTING_DOWN.
func (m *Model) GetSystemState() (SystemState, error) {
	const verb = "getting the system state of"
	if err := m.require(verb, statesAlive); err != nil {
		return SystemState{}, err
	}
	st, err := m.ops.GetSystemState(m)
	if err != nil {
		return st, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return st, nil
}

// GetDataset prepares the model's dataset and fills it with the next
// portion of the record stream (ml_model_get_dataset), when STARTED,
// RUNNING or STOPPED (to drain what was collected before the stop). The
// dataset is allocated by the DatasetOps on first use and reused after
// DiscardDataset; a dataset not discarded yet (other than one partially
// extracted, which is continued) returns ErrDatasetBusy. The returned
// dataset is the model's: use it until DiscardDataset. When the extraction
// fails the dataset is returned with the error, so that its state
// (EXTRACTION_FAILURE, typically) can be looked at.
func (m *Model) GetDataset(req Request) (*Dataset, error) {
	const verb = "getting the dataset of"
	m.dsMu.Lock()
	defer m.dsMu.Unlock()
	if err := m.require(verb, statesData); err != nil {
		return nil, err
	}
	if m.dsClosed {
		return nil, fmt.Errorf("%s %s: %w", verb, m, ErrDestroyed)
	}
	ds := m.dataset
	if ds == nil {
		ds = new(Dataset)
		if err := m.dsOps.Init(m, ds); err != nil {
			return nil, fmt.Errorf("%s %s: initializing dataset: %w", verb, m, err)
		}
		if ds.State != DatasetAllocated {
			return nil, fmt.Errorf("%s %s: dataset is %v after its Init, want ALLOCATED", verb, m, ds.State)
		}
		m.dataset = ds
	}
	switch ds.State {
	case DatasetAllocated, DatasetObsolete:
		if err := ds.MarkClean(); err != nil {
			return nil, fmt.Errorf("%s %s: %w", verb, m, err)
		}
	case DatasetClean, DatasetExtractedPartially:
	default:
		return nil, fmt.Errorf("%s %s: %w: it is %v, discard it first", verb, m, ErrDatasetBusy, ds.State)
	}
	if err := m.ops.GetDataset(m, ds, req); err != nil {
		return ds, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return ds, nil
}

// DiscardDataset marks the current dataset OBSOLETE
// (ml_model_discard_dataset), so that the next GetDataset starts the next
// portion.
func (m *Model) DiscardDataset() error {
	const verb = "discarding the dataset of"
	m.dsMu.Lock()
	defer m.dsMu.Unlock()
	if err := m.require(verb, statesAlive); err != nil {
		return err
	}
	if m.dataset == nil {
		return fmt.Errorf("%s %s: %w", verb, m, ErrNoDataset)
	}
	if err := m.dataset.Discard(); err != nil {
		return fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return nil
}

// PreprocessData preprocesses an extracted dataset
// (ml_model_preprocess_data). A dataset found CORRUPTED trips the mode
// controller: corrupted data means EMERGENCY.
func (m *Model) PreprocessData(ds *Dataset) error {
	const verb = "preprocessing the dataset of"
	if err := m.require(verb, statesAlive); err != nil {
		return err
	}
	m.dsMu.Lock()
	defer m.dsMu.Unlock()
	err := m.ops.PreprocessData(m, ds)
	if ds.State == DatasetCorrupted {
		cause := err
		if cause == nil {
			cause = fmt.Errorf("%w: portion at offset %d", ErrCorruptedDataset, ds.PortionOffset)
		}
		if c := m.Controller(); c != nil {
			c.TripCorrupted(cause)
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return nil
}

// PublishData tells the agent about a dataset (ml_model_publish_data) and
// returns the notification.
func (m *Model) PublishData(ds *Dataset) (Notification, error) {
	const verb = "publishing the dataset of"
	if err := m.require(verb, statesAlive); err != nil {
		return Notification{}, err
	}
	note := m.notification(NotifyDataset)
	m.dsMu.Lock()
	defer m.dsMu.Unlock()
	n := &m.published
	*n = note
	n.DatasetState, n.PortionOffset, n.PortionSize = ds.State, ds.PortionOffset, ds.PortionSize
	n.Lost, n.Corrupted = ds.Lost, ds.Corrupted
	if err := m.ops.PublishData(m, ds, n); err != nil {
		return *n, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return *n, nil
}

func (m *Model) notification(kind NotificationKind) Notification {
	ctl := m.Control()
	return Notification{Kind: kind, Subsystem: m.subsystem, Model: m.name, Mode: ctl.Mode, Generation: ctl.Generation}
}

// PreprocessRecommendation validates and clamps a recommendation
// (ml_model_preprocess_recommendation) and returns it as it would be
// applied.
func (m *Model) PreprocessRecommendation(rec Recommendation) (Recommendation, error) {
	const verb = "preprocessing a recommendation for"
	if err := m.require(verb, statesAlive); err != nil {
		return rec, err
	}
	if err := m.ops.PreprocessRecommendation(m, &rec); err != nil {
		return rec, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return rec, nil
}

// ApplyRecommendation preprocesses and applies a recommendation
// (apply_ml_model_recommendation), when STARTED or RUNNING. Whether the
// kernel uses it is the mode's business, decided at the hook.
func (m *Model) ApplyRecommendation(rec Recommendation) error {
	const verb = "applying a recommendation to"
	if err := m.require(verb, statesActive); err != nil {
		return err
	}
	if err := m.ops.PreprocessRecommendation(m, &rec); err != nil {
		return fmt.Errorf("%s %s: %w", verb, m, err)
	}
	if err := m.ops.ApplyRecommendation(m, rec); err != nil {
		return fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return nil
}

// ExecuteOperation executes the mode's logic for a recommendation and a
// request (execute_ml_model_operation), when STARTED or RUNNING.
func (m *Model) ExecuteOperation(rec Recommendation, req Request) error {
	const verb = "executing an operation of"
	if err := m.require(verb, statesActive); err != nil {
		return err
	}
	if err := m.ops.ExecuteOperation(m, rec, req); err != nil {
		return fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return nil
}

// EstimateEfficiency estimates the model's efficiency
// (estimate_ml_model_efficiency), once initialized.
func (m *Model) EstimateEfficiency(rec Recommendation, req Request) (Efficiency, error) {
	const verb = "estimating the efficiency of"
	if err := m.require(verb, statesInited); err != nil {
		return Efficiency{}, err
	}
	eff, err := m.ops.EstimateEfficiency(m, rec, req)
	if err != nil {
		return eff, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return eff, nil
}

// ErrorBackpropagation hands an outcome back to the model
// (ml_model_error_backpropagation), once initialized, and returns the
// notification for the learner.
func (m *Model) ErrorBackpropagation(fb Feedback) (Notification, error) {
	const verb = "back-propagating feedback to"
	if err := m.require(verb, statesInited); err != nil {
		return Notification{}, err
	}
	n := m.notification(NotifyFeedback)
	if err := m.ops.ErrorBackpropagation(m, fb, &n); err != nil {
		return n, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return n, nil
}

// EstimateSystemState returns the mode decision the evidence supports
// (estimate_system_state), without applying it, once initialized.
func (m *Model) EstimateSystemState() (Decision, error) {
	const verb = "estimating the system state of"
	if err := m.require(verb, statesInited); err != nil {
		return Decision{}, err
	}
	d, err := m.ops.EstimateSystemState(m)
	if err != nil {
		return d, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return d, nil
}

// CorrectSystemState estimates the mode decision and applies it
// (correct_system_state), when STARTED or RUNNING.
func (m *Model) CorrectSystemState() (Decision, error) {
	const verb = "correcting the system state of"
	if err := m.require(verb, statesActive); err != nil {
		return Decision{}, err
	}
	d, err := m.ops.CorrectSystemState(m)
	if err != nil {
		return d, fmt.Errorf("%s %s: %w", verb, m, err)
	}
	return d, nil
}
