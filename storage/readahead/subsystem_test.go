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

// TestRecommendationsListAndWithdraw: 'mlbpf recommendations' lists an
// operator's readahead for a device and the learner's per phase, and
// 'recommend --withdraw' takes the operator's back (the learner's apply
// again), then the learner's (it forgets the device).
func TestRecommendationsListAndWithdraw(t *testing.T) {
	tb := newTestbed(t, testbed.Config{})
	old := WatchdogCommand
	WatchdogCommand = func() []string { return nil }
	t.Cleanup(func() { WatchdogCommand = old })
	env := pipeline.Env{Model: "readahead", PinRoot: testutil.PinRoot(t), StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler),
		Options: model.Options{SleepTimeout: 250 * time.Millisecond, InitialMode: model.ModeCollaboration}}
	loop, err := Subsystem().Open(env, &SectionConfig{Devices: []string{tb.Name}})
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	tu := loop.Objects().(*objects).t
	list := func() []pipeline.Entry {
		t.Helper()
		es, err := loop.Recommendations()
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	if es := list(); len(es) != 0 {
		t.Errorf("before anything was learned or recommended: %+v, want none", es)
	}
	for range 3 {
		tu.learner.Observe(tb.Dev(), PhaseSequential, 1024, 9e6)
		tu.learner.Observe(tb.Dev(), PhaseMmap, 16, 4e5)
	}
	if _, err := loop.Recommend(model.Recommendation{Key: tb.Name, Value: "512"}, true); err != nil {
		t.Fatal(err)
	}
	if es := list(); len(es) != 1 || es[0].Key != tb.Name || es[0].Value != "512" || es[0].By != pipeline.ByOperator {
		t.Errorf("after the operator's 512: %+v, want %s=512 by the operator", es, tb.Name)
	}
	if _, err := loop.Withdraw("nosuchdevice"); err == nil {
		t.Error("withdrawing a device the model does not tune was accepted")
	}
	if key, err := loop.Withdraw("/dev/" + tb.Name); err != nil || key != tb.Name {
		t.Fatalf("withdraw /dev/%s: %q, %v", tb.Name, key, err)
	}
	if es := list(); len(es) != 1 || es[0].Value != "mmap=16,sequential=1024" || es[0].By != pipeline.ByLearner {
		t.Errorf("after the operator's withdrawal: %+v, want the learner's mmap=16,sequential=1024", es)
	}
	if _, err := loop.Withdraw(tb.Name); err != nil {
		t.Fatal(err)
	}
	if es := list(); len(es) != 0 {
		t.Errorf("after the learner's withdrawal: %+v, want none", es)
	}
	if kb, ok := tu.learner.Best(tb.Dev(), PhaseSequential); ok {
		t.Errorf("the learner still knows %d KB for sequential reads after the withdrawal", kb)
	}
}

// TestRecommendationsWithNoDaemon: with no daemon the model holds no
// recommendation (its devices are back at their originals): nothing is
// listed, and a withdrawal is validated but changes nothing.
func TestRecommendationsWithNoDaemon(t *testing.T) {
	k, err := Subsystem().OpenPinnedKeys(&SectionConfig{Devices: []string{"sda"}}, t.TempDir(), "readahead")
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if es, err := k.Entries(); err != nil || len(es) != 0 {
		t.Errorf("entries %+v, %v; want none", es, err)
	}
	if key, err := k.WithdrawKey("/dev/sda"); err != nil || key != "sda" {
		t.Errorf("withdraw /dev/sda: %q, %v; want sda", key, err)
	}
	for _, bad := range []string{"sdb", "", "../sda"} {
		if _, err := k.WithdrawKey(bad); err == nil {
			t.Errorf("withdraw %q was accepted", bad)
		}
	}
}
