package model

import (
	"encoding/json"
	"errors"
	"testing"
)

// The values must equal bpf/include/mlbpf.h; package loader also checks
// them against the bpf2go-generated constants.
func TestEnumValuesMatchHeader(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"MLBPF_MODE_UNKNOWN", uint32(ModeUnknown), 0},
		{"MLBPF_MODE_EMERGENCY", uint32(ModeEmergency), 1},
		{"MLBPF_MODE_LEARNING", uint32(ModeLearning), 2},
		{"MLBPF_MODE_COLLABORATION", uint32(ModeCollaboration), 3},
		{"MLBPF_MODE_RECOMMENDATION", uint32(ModeRecommendation), 4},
		{"MLBPF_MODE_MAX", ModeCount, 5},
		{"MLBPF_MODEL_UNKNOWN", uint32(StateUnknown), 0},
		{"MLBPF_MODEL_CREATED", uint32(StateCreated), 1},
		{"MLBPF_MODEL_INITIALIZED", uint32(StateInitialized), 2},
		{"MLBPF_MODEL_STARTED", uint32(StateStarted), 3},
		{"MLBPF_MODEL_RUNNING", uint32(StateRunning), 4},
		{"MLBPF_MODEL_STOPPED", uint32(StateStopped), 5},
		{"MLBPF_MODEL_SHUTTING_DOWN", uint32(StateShuttingDown), 6},
		{"MLBPF_MODEL_STATE_MAX", StateCount, 7},
		{"MLBPF_ARM_FALLBACK", uint32(ArmFallback), 0},
		{"MLBPF_ARM_NO_REC", uint32(ArmNoRec), 1},
		{"MLBPF_ARM_SHADOW", uint32(ArmShadow), 2},
		{"MLBPF_ARM_CONTROL", uint32(ArmControl), 3},
		{"MLBPF_ARM_MODEL", uint32(ArmModel), 4},
		{"MLBPF_ARM_REJECTED", uint32(ArmRejected), 5},
		{"MLBPF_ARM_SKIPPED", uint32(ArmSkipped), 6},
		{"MLBPF_ARM_MAX", ArmCount, 7},
		// The RFC's subsystem states: SHUTTING_DOWN before STOPPED.
		{"ML_LIB_SUBSYSTEM_RUNNING", uint32(SubsystemRunning), 4},
		{"ML_LIB_SUBSYSTEM_SHUTTING_DOWN", uint32(SubsystemShuttingDown), 5},
		{"ML_LIB_SUBSYSTEM_STOPPED", uint32(SubsystemStopped), 6},
		{"ML_LIB_MEMORY_STREAM_DATASET", uint32(DatasetMemoryStream), 4},
		{"ML_LIB_DATASET_CORRUPTED", uint32(DatasetCorrupted), 7},
		{"ML_LIB_REQUEST_CONFIG_INITIALIZED", uint32(RequestConfigInitialized), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestEnumStrings(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{ModeEmergency.String(), "EMERGENCY"},
		{ModeRecommendation.String(), "RECOMMENDATION"},
		{Mode(9).String(), "Mode(9)"},
		{StateCreated.String(), "CREATED"},
		{StateShuttingDown.String(), "SHUTTING_DOWN"},
		{State(7).String(), "State(7)"},
		{SubsystemShuttingDown.String(), "SHUTTING_DOWN"},
		{SubsystemStopped.String(), "STOPPED"},
		{SubsystemState(7).String(), "SubsystemState(7)"},
		{DatasetMemoryStream.String(), "MEMORY_STREAM"},
		{DatasetType(5).String(), "DatasetType(5)"},
		{DatasetExtractionFailure.String(), "EXTRACTION_FAILURE"},
		{DatasetState(8).String(), "DatasetState(8)"},
		{RequestConfigEmpty.String(), "EMPTY"},
		{RequestConfigType(2).String(), "RequestConfigType(2)"},
		{RequestConfigAllocated.String(), "ALLOCATED"},
		{RequestConfigState(3).String(), "RequestConfigState(3)"},
		{ArmFallback.String(), "fallback"},
		{ArmNoRec.String(), "no_rec"},
		{ArmShadow.String(), "shadow"},
		{ArmControl.String(), "control"},
		{ArmModel.String(), "model"},
		{ArmRejected.String(), "rejected"},
		{ArmSkipped.String(), "skipped"},
		{Arm(7).String(), "Arm(7)"},
		{OpReInit.String(), "re_init"},
		{Operation(99).String(), "Operation(99)"},
		{NotifyFeedback.String(), "feedback"},
	} {
		if c.got != c.want {
			t.Errorf("String() = %q, want %q", c.got, c.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{
		"learning":             ModeLearning,
		"LEARNING":             ModeLearning,
		"LEARNING_MODE":        ModeLearning,
		"ml_lib_learning_mode": ModeLearning,
		" Collaboration ":      ModeCollaboration,
		"emergency":            ModeEmergency,
		"RECOMMENDATION_MODE":  ModeRecommendation,
		"unknown":              ModeUnknown,
	} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "learn", "MODE", "4", "LEARNING_MODE_MODE"} {
		if m, err := ParseMode(in); !errors.Is(err, ErrInvalidMode) {
			t.Errorf("ParseMode(%q) = %v, %v; want ErrInvalidMode", in, m, err)
		}
	}
}

func TestModeText(t *testing.T) {
	type doc struct {
		Mode  Mode
		State State
		Arm   Arm
	}
	in := doc{ModeCollaboration, StateRunning, ArmNoRec}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Mode":"COLLABORATION","State":"RUNNING","Arm":"no_rec"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip = %+v, %v; want %+v", out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"Mode":"learning_mode"}`), &out); err != nil || out.Mode != ModeLearning {
		t.Errorf("unmarshal learning_mode = %v, %v", out.Mode, err)
	}
	if err := json.Unmarshal([]byte(`{"Mode":"bogus"}`), &out); !errors.Is(err, ErrInvalidMode) {
		t.Errorf("unmarshal bogus mode: %v, want ErrInvalidMode", err)
	}
	if _, err := Mode(9).MarshalText(); !errors.Is(err, ErrInvalidMode) {
		t.Errorf("Mode(9).MarshalText: %v, want ErrInvalidMode", err)
	}
	if _, err := ParseArm("nope"); err == nil {
		t.Error("ParseArm(nope) succeeded")
	}
	if _, err := ParseState("nope"); err == nil {
		t.Error("ParseState(nope) succeeded")
	}
}

func TestModeValid(t *testing.T) {
	for m := Mode(0); m < 7; m++ {
		want := m >= ModeEmergency && m <= ModeRecommendation
		if m.Valid() != want {
			t.Errorf("%v.Valid() = %v", m, !want)
		}
	}
}

func TestStateSubsystem(t *testing.T) {
	want := map[State]SubsystemState{
		StateUnknown: SubsystemUnknown, StateCreated: SubsystemCreated, StateInitialized: SubsystemInitialized,
		StateStarted: SubsystemStarted, StateRunning: SubsystemRunning, StateStopped: SubsystemStopped,
		StateShuttingDown: SubsystemShuttingDown, State(42): SubsystemUnknown,
	}
	for s, w := range want {
		if got := s.Subsystem(); got != w {
			t.Errorf("%v.Subsystem() = %v, want %v", s, got, w)
		}
	}
}
