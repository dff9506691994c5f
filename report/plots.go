package report

import (
	"bytes"
	"fmt"
	"html/template"
	"image/color"
	"math"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/mlbpf/mlbpf/history"
)

const (
	plotWidth  = vg.Length(720) // points
	plotHeight = vg.Length(280)
	// boxValues is the size of the sample a box plot is drawn from, drawn
	// from the periods' samples weighted by their outcomes.
	boxValues = 400
)

// drawPlots draws the page's plots, in PlotTitles' order.
func drawPlots(h *history.History) ([]template.HTML, error) {
	draws := []func(*plot.Plot, []history.Period) error{drawEfficiency, drawArmBoxes, drawArmMeans, drawArmCounts}
	out := make([]template.HTML, len(draws))
	for i, d := range draws {
		p := plot.New()
		p.Title.Text = PlotTitles[i]
		if err := d(p, h.Periods); err != nil {
			return nil, fmt.Errorf("drawing %q: %w", PlotTitles[i], err)
		}
		svg, err := svgOf(p)
		if err != nil {
			return nil, fmt.Errorf("drawing %q: %w", PlotTitles[i], err)
		}
		out[i] = svg
	}
	return out, nil
}

// svgOf draws p as an SVG element to inline in HTML (no XML prelude).
func svgOf(p *plot.Plot) (template.HTML, error) {
	c := vgsvg.New(plotWidth, plotHeight)
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return "", err
	}
	s := b.Bytes()
	if i := bytes.Index(s, []byte("<svg")); i >= 0 {
		s = s[i:]
	}
	return template.HTML(s), nil // gonum's output: no user text but escaped labels
}

func unix(p history.Period) float64 { return float64(p.Time.UnixNano()) / 1e9 }

// timeAxis makes p's X axis the periods' times, as precise as their
// span needs.
func timeAxis(p *plot.Plot, ps []history.Period) {
	format := "15:04:05"
	switch span := ps[len(ps)-1].Time.Sub(ps[0].Time); {
	case span < 20*time.Second:
		format = "15:04:05.0"
	case span > 48*time.Hour:
		format = "Jan 2 15:04"
	}
	p.X.Tick.Marker = plot.TimeTicks{Format: format}
	p.X.Label.Text = "time (UTC)"
}

var (
	bandColor = color.NRGBA{R: 70, G: 130, B: 180, A: 70}
	lineColor = color.NRGBA{R: 30, G: 80, B: 140, A: 255}
	modeColor = color.NRGBA{R: 180, G: 60, B: 40, A: 255}
	grey      = color.NRGBA{R: 128, G: 128, B: 128, A: 255}
)

// drawEfficiency: the estimated effect with its band, per run of periods
// in one mode, and the mode changes.
func drawEfficiency(p *plot.Plot, ps []history.Period) error {
	timeAxis(p, ps)
	p.Y.Label.Text = "gain in reward (model − default)"
	p.Add(plotter.NewGrid())
	stride := max(1, len(ps)/maxPoints)
	var line, lo, hi plotter.XYs
	var halves []float64 // the bands' half widths
	ymin, ymax := 0.0, 0.0
	flush := func() error {
		if len(line) == 0 {
			return nil
		}
		band := slices.Clone(hi)
		for i := len(lo) - 1; i >= 0; i-- {
			band = append(band, lo[i])
		}
		poly, err := plotter.NewPolygon(band)
		if err != nil {
			return err
		}
		poly.Color, poly.LineStyle.Width = bandColor, 0
		l, err := plotter.NewLine(line)
		if err != nil {
			return err
		}
		l.Color, l.Width = lineColor, vg.Points(1.5)
		p.Add(poly, l)
		line, lo, hi = nil, nil, nil
		return nil
	}
	mode := ""
	for i, pd := range ps {
		e := pd.Efficiency
		// No estimate yet (no outcome on a side, in a mode just entered)
		// or an infinite interval: a gap.
		ok := e != nil && e.N > 0 && e.BaselineN > 0 && finite(e.Effect, e.Lower, e.Upper)
		if !ok || e.Mode != mode {
			if err := flush(); err != nil {
				return err
			}
			if !ok {
				continue
			}
			mode = e.Mode
		}
		if i%stride != 0 && i != len(ps)-1 {
			continue
		}
		x := unix(pd)
		line = append(line, plotter.XY{X: x, Y: e.Effect})
		lo = append(lo, plotter.XY{X: x, Y: e.Lower})
		hi = append(hi, plotter.XY{X: x, Y: e.Upper})
		halves = append(halves, (e.Upper-e.Lower)/2)
		ymin, ymax = min(ymin, e.Effect), max(ymax, e.Effect)
	}
	if err := flush(); err != nil {
		return err
	}
	// The first estimates of a mode, or those with a small holdout, have
	// wide intervals: show the estimates and a typical band around them,
	// the wider bands cut at the edges.
	if len(halves) > 0 {
		med := quantile(halves, 0.5)
		ymin, ymax = ymin-med, ymax+med
	}
	if ymin == ymax {
		ymin, ymax = -1, 1
	}
	pad := (ymax - ymin) * 0.12
	p.Y.Min, p.Y.Max = ymin-pad, ymax+pad
	p.X.Min, p.X.Max = unix(ps[0]), max(unix(ps[len(ps)-1]), unix(ps[0])+1)
	zero, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 0}, {X: p.X.Max, Y: 0}})
	if err != nil {
		return err
	}
	zero.Color = grey
	p.Add(zero)
	var labels plotter.XYLabels
	for i, c := range modeChangeTimes(ps) {
		v, err := plotter.NewLine(plotter.XYs{{X: c.x, Y: p.Y.Min}, {X: c.x, Y: p.Y.Max}})
		if err != nil {
			return err
		}
		v.Color, v.Dashes = modeColor, []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(v)
		// Three rows of labels, so that close changes stay readable.
		labels.XYs = append(labels.XYs, plotter.XY{X: c.x, Y: p.Y.Max - (p.Y.Max-p.Y.Min)*(0.05+0.07*float64(i%3))})
		labels.Labels = append(labels.Labels, " → "+c.to)
	}
	if len(halves) == 0 {
		labels.XYs = append(labels.XYs, plotter.XY{X: p.X.Min, Y: 0})
		labels.Labels = append(labels.Labels, " no efficiency estimate yet")
	}
	if len(labels.XYs) > 0 {
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].Color = modeColor
		}
		p.Add(l)
	}
	return nil
}

type modeMark struct {
	x  float64
	to string
}

func modeChangeTimes(ps []history.Period) []modeMark {
	var out []modeMark
	for i := 1; i < len(ps); i++ {
		if ps[i].Mode != ps[i-1].Mode {
			out = append(out, modeMark{x: unix(ps[i]), to: ps[i].Mode})
		}
	}
	return out
}

// armColor gives each arm the same color in every plot.
func armColor(arm string) color.Color {
	if i := slices.Index(armOrder, arm); i >= 0 {
		return plotutil.Color(i)
	}
	return grey
}

// drawArmBoxes draws a box plot per arm of all its outcomes.
func drawArmBoxes(p *plot.Plot, ps []history.Period) error {
	p.Y.Label.Text = "reward"
	type pooled struct {
		n        int
		min, max float64
		vals     []weighted
	}
	arms := map[string]*pooled{}
	for _, pd := range ps {
		for _, a := range pd.Arms {
			s := arms[a.Arm]
			if s == nil {
				s = &pooled{min: a.Min, max: a.Max}
				arms[a.Arm] = s
			}
			s.n += a.N
			s.min, s.max = min(s.min, a.Min), max(s.max, a.Max)
			if len(a.Sample) == 0 {
				continue
			}
			w := float64(a.N) / float64(len(a.Sample))
			for _, v := range a.Sample {
				s.vals = append(s.vals, weighted{float64(v), w})
			}
		}
	}
	set := map[string]bool{}
	for a := range arms {
		set[a] = true
	}
	names := sortArms(set)
	if len(names) == 0 {
		p.NominalX("no outcomes yet")
		return nil
	}
	var ticks []string
	for i, a := range names {
		s := arms[a]
		ticks = append(ticks, fmt.Sprintf("%s (n=%d)", a, s.n))
		vals := resample(s.vals, boxValues)
		if len(vals) == 0 {
			continue
		}
		vals = append(vals, s.min, s.max)
		b, err := plotter.NewBoxPlot(vg.Points(40), float64(i), vals)
		if err != nil {
			return err
		}
		b.FillColor = armColor(a)
		p.Add(b)
	}
	p.NominalX(ticks...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	p.Add(plotter.NewGrid())
	return nil
}

type weighted struct{ v, w float64 }

// resample returns n values whose distribution is the weighted one of
// vs: its quantiles at (i+½)/n.
func resample(vs []weighted, n int) plotter.Values {
	if len(vs) == 0 {
		return nil
	}
	slices.SortFunc(vs, func(a, b weighted) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	total := 0.0
	for _, x := range vs {
		total += x.w
	}
	out := make(plotter.Values, 0, n)
	j, cum := 0, vs[0].w
	for i := range n {
		target := (float64(i) + 0.5) / float64(n) * total
		for cum < target && j+1 < len(vs) {
			j++
			cum += vs[j].w
		}
		out = append(out, vs[j].v)
	}
	return out
}

// quantile returns the q quantile of vs (sorting a copy).
func quantile(vs []float64, q float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[int(math.Round(q*float64(len(s)-1)))]
}

// armSeries sums up each arm per bucket of periods: the bucket's time,
// its outcomes per period and their mean.
type armPoint struct {
	x, perPeriod, mean float64
}

func armSeries(ps []history.Period) (names []string, series map[string][]armPoint) {
	stride := max(1, (len(ps)+maxPoints-1)/maxPoints)
	series = map[string][]armPoint{}
	set := map[string]bool{}
	for _, pd := range ps {
		for _, a := range pd.Arms {
			set[a.Arm] = true
		}
	}
	names = sortArms(set)
	for start := 0; start < len(ps); start += stride {
		bucket := ps[start:min(start+stride, len(ps))]
		x := unix(bucket[len(bucket)-1])
		for _, a := range names {
			n, sum := 0, 0.0
			for _, pd := range bucket {
				for _, ap := range pd.Arms {
					if ap.Arm == a {
						n += ap.N
						sum += ap.Mean * float64(ap.N)
					}
				}
			}
			pt := armPoint{x: x, perPeriod: float64(n) / float64(len(bucket)), mean: math.NaN()}
			if n > 0 {
				pt.mean = sum / float64(n)
			}
			series[a] = append(series[a], pt)
		}
	}
	return names, series
}

func drawArmMeans(p *plot.Plot, ps []history.Period) error {
	return drawArmLines(p, ps, "mean reward", func(pt armPoint) float64 { return pt.mean })
}

func drawArmCounts(p *plot.Plot, ps []history.Period) error {
	return drawArmLines(p, ps, "outcomes per period", func(pt armPoint) float64 { return pt.perPeriod })
}

// drawArmLines draws a line per arm of y over time; NaN points are left
// out.
func drawArmLines(p *plot.Plot, ps []history.Period, ylabel string, y func(armPoint) float64) error {
	timeAxis(p, ps)
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	names, series := armSeries(ps)
	for _, a := range names {
		var xys plotter.XYs
		for _, pt := range series[a] {
			if v := y(pt); finite(v) {
				xys = append(xys, plotter.XY{X: pt.x, Y: v})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		l.Color, l.Width = armColor(a), vg.Points(1.5)
		s.Color, s.Radius = armColor(a), vg.Points(1.5)
		p.Add(l, s)
		p.Legend.Add(a, l)
	}
	p.X.Min, p.X.Max = unix(ps[0]), max(unix(ps[len(ps)-1]), unix(ps[0])+1)
	return nil
}
