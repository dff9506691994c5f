package model

import "errors"

// Sentinel errors, wrapped by the errors of this package where they apply;
// check with errors.Is.
var (
	// ErrIllegalTransition: the operation is not legal in the current state
	// of the model or dataset. Nothing was changed.
	ErrIllegalTransition = errors.New("illegal transition")
	// ErrDestroyed: the model is SHUTTING_DOWN; create a new one.
	ErrDestroyed = errors.New("model destroyed")
	// ErrInvalidState: the model is in a state where the operation makes no
	// sense (applying a recommendation before Start, for example).
	ErrInvalidState = errors.New("operation not allowed in this state")
	// ErrAboveMaxMode: a mode above Options.MaxMode was requested.
	ErrAboveMaxMode = errors.New("mode above max mode")
	// ErrInvalidMode: not one of EMERGENCY, LEARNING, COLLABORATION,
	// RECOMMENDATION.
	ErrInvalidMode = errors.New("invalid mode")
	// ErrModeChanged: a Decision was made for a mode that is no longer the
	// model's mode (an operator changed it meanwhile).
	ErrModeChanged = errors.New("mode changed since the decision")
	// ErrInvalidOptions: Options or RunConfig failed validation.
	ErrInvalidOptions = errors.New("invalid model options")
	// ErrInvalidName: a subsystem or model name that cannot be a pin
	// directory component.
	ErrInvalidName = errors.New("invalid name")
	// ErrNotSupported: a generic operation with no sensible default; the
	// subsystem must override it.
	ErrNotSupported = errors.New("operation not supported")
	// ErrInvalidRecommendation: a recommendation failed preprocessing.
	ErrInvalidRecommendation = errors.New("invalid recommendation")
	// ErrNoDataset: no dataset has been requested yet.
	ErrNoDataset = errors.New("no dataset")
	// ErrDatasetBusy: the current dataset has not been discarded yet.
	ErrDatasetBusy = errors.New("dataset not discarded")
	// ErrDatasetFull: the dataset portion holds as many records as were
	// allocated.
	ErrDatasetFull = errors.New("dataset full")
	// ErrInvalidDataset: a dataset layout (type, record size, capacity) or
	// record that does not fit.
	ErrInvalidDataset = errors.New("invalid dataset")
	// ErrCorruptedDataset: the dataset failed its consistency checks.
	ErrCorruptedDataset = errors.New("dataset corrupted")
	// ErrControlMismatch: the control block read back differs from what
	// this model wrote, at the same generation.
	ErrControlMismatch = errors.New("control block differs from what was written")
)
