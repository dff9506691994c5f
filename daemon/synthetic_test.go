package daemon

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

// busyChild starts a process that makes syscalls as fast as it can, for
// the live hook to see, and returns its pid.
func busyChild(t *testing.T) uint32 {
	t.Helper()
	cmd := exec.Command("yes")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = devnull
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a syscall load: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		devnull.Close()
	})
	return uint32(cmd.Process.Pid)
}

func runLive(t *testing.T, adversarial bool, maxMode model.Mode) (Status, string) {
	t.Helper()
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	pid := busyChild(t)
	st, err := RunSynthetic(context.Background(), SyntheticConfig{
		PinRoot:     root,
		Model:       "live",
		Options:     model.Options{SleepTimeout: 100 * time.Millisecond, MaxMode: maxMode},
		Duration:    3 * time.Second,
		FilterTgid:  pid,
		Adversarial: adversarial,
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, root
}

func TestRunSyntheticGoodModelPromoted(t *testing.T) {
	st, root := runLive(t, false, model.ModeRecommendation)
	if st.Records == 0 || st.Corrupted != 0 {
		t.Fatalf("records %d corrupted %d: the live hook saw nothing or garbage", st.Records, st.Corrupted)
	}
	if st.Mode != model.ModeRecommendation.String() {
		t.Fatalf("a perfect model ended in %s after %d records, want RECOMMENDATION; changes %+v", st.Mode, st.Records, st.Changes)
	}
	if st.Arms[model.ArmModel.String()] == 0 {
		t.Fatalf("the model was never applied: arms %v", st.Arms)
	}
	// On return the kernel is back on its default: the model is STOPPED.
	pm, err := loader.ReadPinned(root, synthetic.Name, "live")
	if err != nil {
		t.Fatal(err)
	}
	if model.State(pm.Control.State) != model.StateStopped {
		t.Fatalf("control block after the run: %+v, want STOPPED", pm.Control)
	}
}

func TestRunSyntheticBadModelNeverPromoted(t *testing.T) {
	// Every recommendation is as far from the target as can be.
	st, _ := runLive(t, true, model.ModeRecommendation)
	if st.Records < 100 {
		t.Fatalf("only %d records: not enough evidence for the test to mean anything", st.Records)
	}
	if len(st.Changes) != 0 || st.Mode != model.ModeLearning.String() {
		t.Fatalf("a bad model left LEARNING: mode %s, changes %+v", st.Mode, st.Changes)
	}
	if st.Arms[model.ArmModel.String()] != 0 {
		t.Fatalf("a bad model was applied: arms %v", st.Arms)
	}
}

func TestRunSyntheticMaxModeCaps(t *testing.T) {
	st, _ := runLive(t, false, model.ModeCollaboration)
	if st.Mode != model.ModeCollaboration.String() {
		t.Fatalf("max_mode COLLABORATION: ended in %s, changes %+v", st.Mode, st.Changes)
	}
}
