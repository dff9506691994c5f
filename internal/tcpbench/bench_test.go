package tcpbench

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestLine(t *testing.T) {
	r := Result{Loss: 10, Default: 20e6, BestCC: "bbr", Best: 400e6, MLBPF: 380e6, Mode: model.ModeRecommendation, LearnedAfter: 64}
	want := "tcp loss=10% default=20 best=bbr:400 mlbpf=380 vs_default=19.00 vs_best=0.95 mode=RECOMMENDATION learned_after=64"
	if got := r.Line(); got != want {
		t.Fatalf("line\n%s\nwant\n%s", got, want)
	}
	r.LearnedAfter = 0
	if got := r.Line(); !strings.HasSuffix(got, "learned_after=-") {
		t.Fatalf("not learned: %s", got)
	}
}

// TestRunSmoke runs a tiny benchmark: every phase, few samples.
func TestRunSmoke(t *testing.T) {
	testutil.RequireBPF(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		testutil.Missing(t, "needs iperf3 (apt-get install iperf3; make setup installs it)")
	}
	var out strings.Builder
	res, cost, err := Run(t.Context(), &out, Config{
		Losses: []float64{0}, Runs: 1, MaxLearn: 6, RateRounds: 2, RateRound: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if len(res) != 1 || res[0].Default <= 0 || res[0].MLBPF <= 0 || res[0].Mode != model.ModeLearning {
		t.Fatalf("results %+v", res)
	}
	if cost.RateWith <= 0 || cost.RateWithout <= 0 || cost.NsPerCall <= 0 {
		t.Fatalf("cost %+v", cost)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 2 {
		t.Fatalf("%d lines of output, want 2:\n%s", lines, out.String())
	}
}
