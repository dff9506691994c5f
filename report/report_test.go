package report

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/history"
	"github.com/mlbpf/mlbpf/model"
)

// fakeHistory is a model learning, promoted twice.
func fakeHistory(periods int) *history.History {
	r := rand.New(rand.NewPCG(1, 2))
	h := &history.History{Model: "synthetic/demo"}
	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	mode, n := model.ModeLearning, 0
	for i := range periods {
		var acc history.Acc
		for range 50 {
			switch mode {
			case model.ModeLearning:
				acc.Add(model.ArmShadow, r.NormFloat64())
			default:
				acc.Add(model.ArmModel, 1+r.NormFloat64())
				acc.Add(model.ArmControl, r.NormFloat64())
			}
		}
		n += 50
		d := model.Decision{From: mode, To: mode, Reason: "n=" + strings.Repeat("1", i%3+1) + " of 30; waiting"}
		if i == periods/3 || i == 2*periods/3 {
			d.To, d.Changed, d.Reason = mode+1, true, "p=0.001 < α=0.01: improvement"
		}
		if d.Changed { // the period ends in the new mode
			mode, n = d.To, 0
		}
		w := 2 / float64(i%(periods/3)+1)
		p := history.Period{Time: t0.Add(time.Duration(i) * time.Second), Mode: mode.String(), State: "RUNNING",
			Records: 50, Decision: history.DecisionOf(d),
			Efficiency: &agent.Efficiency{Mode: mode.String(), N: n, BaselineN: n, Effect: 1, Lower: 1 - w, Upper: 1 + w, Confidence: 0.99}}
		acc.Take(&p)
		h.Periods = append(h.Periods, p)
	}
	h.Keys = &history.Keys{Time: t0, Keys: []history.Key{
		{Key: "5", Value: "42", By: "learner", Evidence: map[string]history.Arm{"model": {N: 10, Mean: 1}, "control": {N: 9, Mean: 0}}},
		{Key: "<b>", Value: "7", By: "operator"},
	}}
	return h
}

// TestRender renders a history: every plot as inline SVG under its
// title, the mode changes, the decisions collapsed, the keys escaped.
func TestRender(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, fakeHistory(90), Options{Source: "test"}); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if n := strings.Count(s, "<svg"); n != len(PlotTitles) {
		t.Fatalf("%d <svg> elements, want %d", n, len(PlotTitles))
	}
	if strings.Contains(s, "<?xml") {
		t.Error("an XML prelude inside the page")
	}
	for _, want := range append([]string{"→ COLLABORATION", "→ RECOMMENDATION", "&lt;b&gt;", "shadow (n=", "model (n="}, PlotTitles...) {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// 3 runs of "stay" and 2 changes.
	if n := strings.Count(s, "<tr") - strings.Count(s, "<tr><th"); n != 2+5+2 {
		t.Errorf("%d table rows, want 2 mode changes, 5 decision runs, 2 keys", n)
	}
}

func TestRenderNoHistory(t *testing.T) {
	err := Render(&bytes.Buffer{}, &history.History{Model: "m"}, Options{})
	if !errors.Is(err, history.ErrNoHistory) {
		t.Fatalf("%v, want ErrNoHistory", err)
	}
}

func TestResample(t *testing.T) {
	// 1 weighs 3 times as much as 2.
	v := resample([]weighted{{2, 1}, {1, 3}}, 8)
	ones := 0
	for _, x := range v {
		if x == 1 {
			ones++
		}
	}
	if ones != 6 {
		t.Fatalf("%v: %d ones, want 6", v, ones)
	}
}

// TestSections: a benchmark's page, a section per run, one of them with
// no history.
func TestSections(t *testing.T) {
	var c *Collector
	c.Add("nothing", t.TempDir(), "m") // a nil Collector gathers nothing
	c = &Collector{}
	c.Add("0 % loss", t.TempDir(), "synthetic/demo")
	var b bytes.Buffer
	secs := append(slices.Clone(c.secs), Section{Name: "10 % loss", History: fakeHistory(30)})
	if err := RenderSections(&b, secs, Options{Title: "bench"}); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if n := strings.Count(s, "<svg"); n != len(PlotTitles) {
		t.Fatalf("%d <svg>, want %d: one section has no history", n, len(PlotTitles))
	}
	for _, want := range []string{`<h2 class="section">0 % loss</h2>`, "no history yet", `<h2 class="section">10 % loss</h2>`} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
