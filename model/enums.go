package model

import (
	"fmt"
	"strconv"
	"strings"
)

// Mode is the RFC's enum ml_lib_system_mode: how the subsystem uses the
// model. The values are those of enum mlbpf_mode in bpf/include/mlbpf.h.
type Mode uint32

// Modes, from least to most trust in the model.
const (
	ModeUnknown        Mode = 0 // ML_LIB_UNKNOWN_MODE
	ModeEmergency      Mode = 1 // ignore the model, run the default
	ModeLearning       Mode = 2 // recommendations looked up, never applied
	ModeCollaboration  Mode = 3 // applied to a random share, the rest is the control group
	ModeRecommendation Mode = 4 // applied, except a small holdout
	// ModeCount is the number of modes (ML_LIB_MODE_MAX).
	ModeCount = 5
)

var modeNames = [ModeCount]string{"UNKNOWN", "EMERGENCY", "LEARNING", "COLLABORATION", "RECOMMENDATION"}

// String returns the mode's name as in the RFC without its _MODE suffix,
// "EMERGENCY" for example, or "Mode(9)" for a value that is not a mode.
func (m Mode) String() string { return enumName(modeNames[:], uint32(m), "Mode") }

// Valid reports whether m is a mode a model can be in: EMERGENCY,
// LEARNING, COLLABORATION or RECOMMENDATION.
func (m Mode) Valid() bool { return m >= ModeEmergency && m <= ModeRecommendation }

// ParseMode parses a mode name, case-insensitively, with or without the
// RFC's ML_LIB_ prefix and _MODE suffix: "learning", "LEARNING_MODE" and
// "ML_LIB_LEARNING_MODE" all give ModeLearning.
func ParseMode(s string) (Mode, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "ML_LIB_")
	name = strings.TrimSuffix(name, "_MODE")
	for i, n := range modeNames {
		if n == name {
			return Mode(i), nil
		}
	}
	return ModeUnknown, fmt.Errorf("parsing mode %q: %w: want one of emergency, learning, collaboration, recommendation", s, ErrInvalidMode)
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) {
	if uint32(m) >= ModeCount {
		return nil, fmt.Errorf("marshaling %s: %w", m, ErrInvalidMode)
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, accepting what
// ParseMode accepts.
func (m *Mode) UnmarshalText(text []byte) error {
	v, err := ParseMode(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// State is a model's lifecycle state (the RFC's ML_LIB_MODEL_* enum). The
// values are those of enum mlbpf_model_state; the BPF appliers act only in
// StateRunning.
type State uint32

// Model states, in lifecycle order.
const (
	StateUnknown      State = 0
	StateCreated      State = 1
	StateInitialized  State = 2
	StateStarted      State = 3
	StateRunning      State = 4
	StateStopped      State = 5
	StateShuttingDown State = 6
	// StateCount is the number of states (ML_LIB_MODEL_STATE_MAX).
	StateCount = 7
)

var stateNames = [StateCount]string{"UNKNOWN", "CREATED", "INITIALIZED", "STARTED", "RUNNING", "STOPPED", "SHUTTING_DOWN"}

// String returns the state's name, "CREATED" for example.
func (s State) String() string { return enumName(stateNames[:], uint32(s), "State") }

// ParseState parses a state name case-insensitively ("running", "RUNNING").
func ParseState(s string) (State, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "ML_LIB_MODEL_")
	for i, n := range stateNames {
		if n == name {
			return State(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("parsing model state %q: unknown state", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(text []byte) error {
	v, err := ParseState(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Subsystem returns the subsystem state corresponding to a model state.
func (s State) Subsystem() SubsystemState {
	switch s {
	case StateCreated:
		return SubsystemCreated
	case StateInitialized:
		return SubsystemInitialized
	case StateStarted:
		return SubsystemStarted
	case StateRunning:
		return SubsystemRunning
	case StateStopped:
		return SubsystemStopped
	case StateShuttingDown:
		return SubsystemShuttingDown
	default:
		return SubsystemUnknown
	}
}

// SubsystemState is the RFC's ML_LIB_SUBSYSTEM_* enum. Its order differs
// from State's: SHUTTING_DOWN comes before STOPPED.
type SubsystemState uint32

// Subsystem states, in the RFC's order.
const (
	SubsystemUnknown      SubsystemState = 0
	SubsystemCreated      SubsystemState = 1
	SubsystemInitialized  SubsystemState = 2
	SubsystemStarted      SubsystemState = 3
	SubsystemRunning      SubsystemState = 4
	SubsystemShuttingDown SubsystemState = 5
	SubsystemStopped      SubsystemState = 6
)

var subsystemStateNames = []string{"UNKNOWN", "CREATED", "INITIALIZED", "STARTED", "RUNNING", "SHUTTING_DOWN", "STOPPED"}

// String returns the state's name, "SHUTTING_DOWN" for example.
func (s SubsystemState) String() string {
	return enumName(subsystemStateNames, uint32(s), "SubsystemState")
}

// DatasetType is the RFC's ML_LIB_*_DATASET type enum.
type DatasetType uint32

// Dataset types.
const (
	DatasetUnknown      DatasetType = 0
	DatasetEmpty        DatasetType = 1 // no records
	DatasetValue        DatasetType = 2 // scalar records of 1 to 8 bytes
	DatasetStructure    DatasetType = 3 // fixed-size structures, the ring buffer records
	DatasetMemoryStream DatasetType = 4 // a byte stream (record size 1)
)

var datasetTypeNames = []string{"UNKNOWN", "EMPTY", "VALUE", "STRUCTURE", "MEMORY_STREAM"}

// String returns the type's name, "STRUCTURE" for example.
func (t DatasetType) String() string { return enumName(datasetTypeNames, uint32(t), "DatasetType") }

// DatasetState is the RFC's ML_LIB_DATASET_* state enum.
type DatasetState uint32

// Dataset states.
const (
	DatasetStateUnknown        DatasetState = 0
	DatasetAllocated           DatasetState = 1
	DatasetClean               DatasetState = 2
	DatasetExtractedPartially  DatasetState = 3
	DatasetExtractedCompletely DatasetState = 4
	DatasetObsolete            DatasetState = 5
	DatasetExtractionFailure   DatasetState = 6
	DatasetCorrupted           DatasetState = 7
)

var datasetStateNames = []string{"UNKNOWN", "ALLOCATED", "CLEAN", "EXTRACTED_PARTIALLY", "EXTRACTED_COMPLETELY", "OBSOLETE", "EXTRACTION_FAILURE", "CORRUPTED"}

// String returns the state's name, "EXTRACTED_PARTIALLY" for example.
func (s DatasetState) String() string { return enumName(datasetStateNames, uint32(s), "DatasetState") }

// RequestConfigType is the RFC's ML_LIB_*_REQUEST_CONFIG type enum.
type RequestConfigType uint32

// Request configuration types.
const (
	RequestConfigUnknown RequestConfigType = 0
	RequestConfigEmpty   RequestConfigType = 1
)

var requestConfigTypeNames = []string{"UNKNOWN", "EMPTY"}

// String returns the type's name.
func (t RequestConfigType) String() string {
	return enumName(requestConfigTypeNames, uint32(t), "RequestConfigType")
}

// RequestConfigState is the RFC's ML_LIB_REQUEST_CONFIG_* state enum.
type RequestConfigState uint32

// Request configuration states.
const (
	RequestConfigStateUnknown RequestConfigState = 0
	RequestConfigAllocated    RequestConfigState = 1
	RequestConfigInitialized  RequestConfigState = 2
)

var requestConfigStateNames = []string{"UNKNOWN", "ALLOCATED", "INITIALIZED"}

// String returns the state's name.
func (s RequestConfigState) String() string {
	return enumName(requestConfigStateNames, uint32(s), "RequestConfigState")
}

// Arm is what an applier did at one invocation (enum mlbpf_arm). Outcome
// records carry it, so user space can compare what the model did with what
// the default did.
type Arm uint32

// Arms. Only ArmModel applies the recommendation.
const (
	ArmFallback Arm = 0 // default: not RUNNING, EMERGENCY, lease expired
	ArmNoRec    Arm = 1 // the model may act but has no recommendation for the key
	ArmShadow   Arm = 2 // LEARNING: looked up, not applied
	ArmControl  Arm = 3 // COLLABORATION/RECOMMENDATION: drawn to stay on the default
	ArmModel    Arm = 4 // the recommendation was applied
	ArmRejected Arm = 5 // the recommendation failed the applier's checks
	ArmSkipped  Arm = 6 // configured by someone else, left alone
	// ArmCount is the number of arms (MLBPF_ARM_MAX).
	ArmCount = 7
)

var armNames = [ArmCount]string{"fallback", "no_rec", "shadow", "control", "model", "rejected", "skipped"}

// String returns the arm's name in lower case, "no_rec" for example.
func (a Arm) String() string { return enumName(armNames[:], uint32(a), "Arm") }

// ParseArm parses an arm name case-insensitively.
func ParseArm(s string) (Arm, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for i, n := range armNames {
		if n == name {
			return Arm(i), nil
		}
	}
	return 0, fmt.Errorf("parsing arm %q: unknown arm", s)
}

// MarshalText implements encoding.TextMarshaler.
func (a Arm) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Arm) UnmarshalText(text []byte) error {
	v, err := ParseArm(string(text))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

func enumName(names []string, v uint32, typ string) string {
	if uint64(v) < uint64(len(names)) {
		return names[v]
	}
	return typ + "(" + strconv.FormatUint(uint64(v), 10) + ")"
}
