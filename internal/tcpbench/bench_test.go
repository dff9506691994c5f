package tcpbench

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/report"
)

func TestT975(t *testing.T) {
	// Student's t, 97.5th percentile, from tables.
	for df, want := range map[int]float64{1: 12.706, 4: 2.776, 5: 2.571, 9: 2.262, 14: 2.145, 30: 2.042, 1000: 1.962} {
		if got := T975(df); math.Abs(got-want) > 1e-3 {
			t.Errorf("T975(%d) = %.4f, want %.3f", df, got, want)
		}
	}
}

func TestMeanCI(t *testing.T) {
	e := meanCI([]float64{1, 2, 3, 4, 5})
	// mean 3, s = 1.5811, se = 0.7071, t(4) = 2.776
	if e.Value != 3 || math.Abs(e.Hi-3-2.776*0.7071) > 1e-3 || math.Abs(e.Lo+e.Hi-6) > 1e-9 {
		t.Fatalf("meanCI = %+v", e)
	}
}

// TestRatioCIPaired: noise common to both samples of a round cancels in
// the ratio, independent noise does not.
func TestRatioCIPaired(t *testing.T) {
	var a, b, c []float64
	for i := range 20 {
		common := 100 * (1 + 0.3*math.Sin(float64(i)))
		a = append(a, 0.9*common)
		b = append(b, common)
		c = append(c, 90*(1+0.3*math.Sin(float64(i)*7+1)))
	}
	r := ratioCI(a, b)
	if math.Abs(r.Value-0.9) > 1e-9 || r.HalfWidth() > 1e-9 {
		t.Fatalf("paired ratio %+v, want exactly 0.9", r)
	}
	u := ratioCI(c, b)
	if u.HalfWidth() < 0.05 || !u.Contains(0.9) {
		t.Fatalf("unpaired noise: %+v, want a wide interval around 0.9", u)
	}
}

func TestLine(t *testing.T) {
	e := func(v float64) Estimate { return Estimate{v, 0.9 * v, 1.1 * v} }
	r := Result{Loss: 10, Rounds: 12, Target: 0.05,
		Detached: map[string]Estimate{"cubic": e(140e6), "bbr": e(700e6)},
		Attached: map[string]Estimate{"cubic": e(45e6), "bbr": e(690e6)},
		Cost:     map[string]Estimate{"cubic": e(0.32), "bbr": e(0.99)},
		Preset:   e(0.98), PresetDetached: e(150e6), PresetAttached: e(147e6),
		BestCC:    "bbr",
		MLBPF:     e(680e6),
		VsDefault: e(4.86), VsBest: Estimate{0.97, 0.95, 0.99},
		Modes: map[model.Mode]int{model.ModeRecommendation: 97, model.ModeCollaboration: 3}, LearnedAfter: 64}
	want := "tcp loss=10% default_detached=140 [126..154] default_attached=45 [40..50] best=bbr best_detached=700 [630..770] best_attached=690 [621..759] mlbpf=680 [612..748] " +
		"vs_default=4.86 [4.37..5.35] vs_best=0.97 [0.95..0.99] (±2.1%, goal ±5%: met) rounds=12 mode=RECOMMENDATION:97%,COLLABORATION:3% learned_after=64"
	if got := r.Line(); got != want {
		t.Fatalf("line\n%s\nwant\n%s", got, want)
	}
	if got, want := r.CostLine(), "tcp attached/detached loss=10% bbr=0.99 [0.89..1.09] cubic=0.32 [0.29..0.35] skipped:cubic=0.98 [0.88..1.08] (set before connect: detached=150 [135..165] attached=147 [132..162])"; got != want {
		t.Fatalf("cost line\n%s\nwant\n%s", got, want)
	}
	r.LearnedAfter = 0
	r.VsBest = e(0.97)
	if got := r.Line(); !strings.HasSuffix(got, "learned_after=-") || !strings.Contains(got, "goal ±5%: not met") {
		t.Fatalf("not learned, goal not met: %s", got)
	}
}

// TestRunSmoke runs a tiny benchmark through the daemon: every phase, few
// samples.
func TestRunSmoke(t *testing.T) {
	testutil.RequireBPF(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		testutil.Missing(t, "needs iperf3 (apt-get install iperf3; make setup installs it)")
	}
	var out strings.Builder
	page := filepath.Join(t.TempDir(), "report.html")
	res, cost, err := Run(t.Context(), &out, Config{
		Losses: []float64{0}, Algorithms: []string{"cubic", "reno"}, MinRounds: 2, MaxRounds: 2,
		MaxLearn: 6, RateRounds: 2, RateRound: 100 * time.Millisecond, Report: page,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if len(res) != 1 || res[0].Rounds != 2 || res[0].Default().Value <= 0 || res[0].Attached["cubic"].Value <= 0 ||
		res[0].MLBPF.Value <= 0 || res[0].PresetAttached.Value <= 0 || res[0].PresetDetached.Value <= 0 ||
		res[0].Modes[model.ModeLearning] == 0 {
		t.Fatalf("results %+v", res)
	}
	if cost.RateWith.Value <= 0 || cost.RateWithout.Value <= 0 || cost.NsPerCall <= 0 {
		t.Fatalf("cost %+v", cost)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 3 {
		t.Fatalf("%d lines of output, want 3:\n%s", lines, out.String())
	}
	// The report of the daemon's history at 0 % loss, with its plots.
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<h2 class="section">0 % loss</h2>`, `<figure class="plot" title="Efficiency over time">`} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if n := strings.Count(string(html), "<svg"); n != len(report.PlotTitles) {
		t.Errorf("the report holds %d plots, want %d", n, len(report.PlotTitles))
	}
}
