package rabench

import (
	"regexp"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// TestLineKeepsTheIssuesFormat: the line starts exactly as issue 13 has
// it; mlbpf's blocks apart come after learned_after_s.
func TestLineKeepsTheIssuesFormat(t *testing.T) {
	r := Result{Workload: testbed.Seq, Default: Figure{10.6, 0.03}, BestKB: 1024, Best: Figure{28.53, 0.31}, Mode: model.ModeRecommendation,
		LearnedAfter: 22 * time.Second}
	r.armFigures([]learnedRun{
		{MBps: 27.6, Aligned: true, Arms: map[model.Arm]*testbed.Stats{
			model.ArmModel: {Bytes: 19 * 28_500_000, Elapsed: 19 * time.Second}, model.ArmControl: {Bytes: 10_600_000, Elapsed: time.Second}}},
		{MBps: 27.6, Aligned: true, Arms: map[model.Arm]*testbed.Stats{
			model.ArmModel: {Bytes: 19 * 28_500_000, Elapsed: 19 * time.Second}, model.ArmControl: {Bytes: 10_600_000, Elapsed: time.Second}}},
	})
	want := regexp.MustCompile(`^readahead workload=seq default=10\.60±0\.03 best=1024:28\.53±0\.31 mlbpf=27\.60±0\.00 vs_default=2\.60 vs_best=0\.97 mode=RECOMMENDATION learned_after_s=22 on_model=28\.50±0\.00 on_default=10\.60±0\.00 default_share=0\.050$`)
	if got := r.Line(); !want.MatchString(got) {
		t.Errorf("line\n%s\ndoes not match\n%s", got, want)
	}
}

// TestArmFiguresSkipsAbsentArms: a measurement with no block on the
// default counts for on_default's figure not at all (not as 0 MB/s).
func TestArmFiguresSkipsAbsentArms(t *testing.T) {
	var r Result
	r.armFigures([]learnedRun{
		{MBps: 28, Arms: map[model.Arm]*testbed.Stats{model.ArmModel: {Bytes: 28_000_000, Elapsed: time.Second}}},
		{MBps: 20, Arms: map[model.Arm]*testbed.Stats{model.ArmModel: {Bytes: 30_000_000, Elapsed: time.Second}, model.ArmControl: {Bytes: 10_000_000, Elapsed: time.Second}}},
	})
	if r.OnDefault.Mean != 10 || r.OnModel.Mean != 29 || r.MLBPF.Mean != 24 {
		t.Errorf("on_default %v on_model %v mlbpf %v, want 10, 29, 24", r.OnDefault, r.OnModel, r.MLBPF)
	}
	if got := r.DefaultShare; got < 0.333 || got > 0.334 {
		t.Errorf("default_share %.3f, want 1/3", got)
	}
}
