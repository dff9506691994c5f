package readahead

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// TestModelRunsOnTheLoop runs storage/readahead as the daemon does, on
// the one period loop: the loop's mode controller promotes it on a
// sequential workload, an operator's recommendation is validated by the
// subsystem, and stopping the model puts the device back.
func TestModelRunsOnTheLoop(t *testing.T) {
	requireReward(t)
	if testing.Short() {
		t.Skip("learns for up to 120 s")
	}
	tb := newTestbed(t, testbed.Config{Throttle: testbed.Throttle{ReadIOPS: 100}})
	old := WatchdogCommand
	WatchdogCommand = func() []string { return nil }
	t.Cleanup(func() { WatchdogCommand = old })
	env := pipeline.Env{
		Model: "readahead", PinRoot: testutil.PinRoot(t), StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler),
		Options: model.Options{SleepTimeout: 250 * time.Millisecond, InitialMode: model.ModeCollaboration,
			Controller: model.ControllerConfig{MinSamples: 20, Confidence: 0.95, MinEffect: 0.05}},
	}
	sec := &SectionConfig{Devices: []string{tb.Name}}
	if err := sec.Validate(); err != nil {
		t.Fatal(err)
	}
	loop, err := Subsystem().Open(env, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	if _, err := loop.Recommend(model.Recommendation{Key: "nosuchdevice", Value: "1024"}, true); err == nil {
		t.Error("a recommendation for a device the model does not tune was accepted")
	}
	if _, err := loop.Recommend(model.Recommendation{Key: tb.Name, Value: "1000001"}, true); err == nil {
		t.Error("a readahead of 1000001 KB was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	start := time.Now()
	for time.Since(start) < 120*time.Second && loop.Model().Mode() != model.ModeRecommendation {
		if _, err := tb.Run(ctx, testbed.Seq, 2*time.Second, nil); err != nil {
			t.Fatal(err)
		}
	}
	mode := loop.Model().Mode()
	t.Logf("after %v: %v; %s", time.Since(start).Round(time.Second), mode, loop.Stats().Decision)
	if mode != model.ModeRecommendation {
		t.Errorf("mode %v after 120 s of sequential reads at 100 IOPS, want RECOMMENDATION", mode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != testbed.DefaultReadAheadKB {
		t.Errorf("after the model stopped the device holds %d, want its original %d", got, testbed.DefaultReadAheadKB)
	}
}
