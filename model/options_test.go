package model

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	got := Options{}.WithDefaults()
	want := Options{
		SleepTimeout: time.Second, Lease: 3 * time.Second,
		CollabPermille: 500, HoldoutPermille: 50,
		MaxMode: ModeRecommendation, InitialMode: ModeLearning,
		Controller: ControllerConfig{MinSamples: 30, Confidence: 0.99, MinEffect: 0.02, MaxMode: ModeRecommendation},
	}
	if got != want {
		t.Errorf("defaults = %+v\nwant %+v", got, want)
	}
	if again := got.WithDefaults(); again != got {
		t.Errorf("WithDefaults not idempotent: %+v", again)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	low := Options{MaxMode: ModeEmergency, SleepTimeout: 2 * time.Second}.WithDefaults()
	if low.InitialMode != ModeEmergency || low.Lease != 6*time.Second || low.Controller.MaxMode != ModeEmergency {
		t.Errorf("MaxMode EMERGENCY: %+v", low)
	}
	partial := Options{Controller: ControllerConfig{MinSamples: 100}}.WithDefaults()
	if partial.Controller != (ControllerConfig{MinSamples: 100, Confidence: 0.99, MaxMode: ModeRecommendation}) {
		t.Errorf("partial controller config: %+v", partial.Controller)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name  string
		opts  Options
		field string // empty: valid
	}{
		{"zero", Options{}, ""},
		{"full", Options{SleepTimeout: time.Second, Lease: 2 * time.Second, CollabPermille: 1000, HoldoutPermille: 1000, MaxMode: ModeCollaboration, InitialMode: ModeCollaboration}, ""},
		{"collab", Options{CollabPermille: 1001}, "CollabPermille"},
		{"holdout", Options{HoldoutPermille: 5000}, "HoldoutPermille"},
		{"negative lease", Options{Lease: -time.Second}, "Lease"},
		{"short lease", Options{SleepTimeout: time.Second, Lease: time.Second}, "Lease"},
		{"negative sleep", Options{SleepTimeout: -1}, "SleepTimeout"},
		{"max mode", Options{MaxMode: Mode(7)}, "MaxMode"},
		{"initial mode", Options{InitialMode: Mode(5)}, "InitialMode"},
		{"initial above max", Options{InitialMode: ModeRecommendation, MaxMode: ModeLearning}, "InitialMode"},
		{"controller confidence", Options{Controller: ControllerConfig{Confidence: 1.5}}, "Controller.Confidence"},
		{"controller samples", Options{Controller: ControllerConfig{MinSamples: 1}}, "Controller.MinSamples"},
		{"controller effect", Options{Controller: ControllerConfig{MinEffect: -0.1}}, "Controller.MinEffect"},
		{"controller max mode", Options{MaxMode: ModeLearning, Controller: ControllerConfig{MaxMode: ModeRecommendation}}, "Controller.MaxMode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.opts.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Validate = %v, want ErrInvalidOptions", err)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q does not name %s", err, c.field)
			}
		})
	}
	// Several problems are all reported.
	err := Options{CollabPermille: 2000, HoldoutPermille: 2000}.Validate()
	if err == nil || !strings.Contains(err.Error(), "CollabPermille") || !strings.Contains(err.Error(), "HoldoutPermille") {
		t.Errorf("two problems: %v", err)
	}
	// Effective options validate again (Controller.MaxMode filled in).
	eff := Options{MaxMode: ModeCollaboration}.WithDefaults()
	if err := eff.Validate(); err != nil {
		t.Errorf("effective options: %v", err)
	}
}

func TestRunConfig(t *testing.T) {
	if err := (RunConfig{SleepTimeout: -time.Second}).Validate(); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "SleepTimeout") {
		t.Errorf("negative SleepTimeout: %v", err)
	}
	o := RunConfig{SleepTimeout: 2 * time.Second}.apply(Options{SleepTimeout: time.Second})
	if o.WithDefaults().Lease != 6*time.Second {
		t.Errorf("lease follows the run's sleep timeout: %v", o.WithDefaults().Lease)
	}
	o = RunConfig{}.apply(Options{SleepTimeout: time.Second, Lease: 5 * time.Second})
	if o.SleepTimeout != time.Second || o.Lease != 5*time.Second {
		t.Errorf("zero run config changed options: %+v", o)
	}
}

func TestControllerConfigValidate(t *testing.T) {
	if err := (ControllerConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	if err := DefaultControllerConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	for _, c := range []ControllerConfig{
		{MinSamples: -1}, {Confidence: 0.3}, {Confidence: 1}, {MinEffect: -1}, {MaxMode: Mode(8)},
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: Validate = %v, want ErrInvalidOptions", c, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("NewController with an invalid config did not panic")
		}
	}()
	NewController(ControllerConfig{Confidence: 2})
}
