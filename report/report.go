package report

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"io"
	"math"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/history"
	"github.com/mlbpf/mlbpf/internal/atomicfile"
)

// Options are a report's.
type Options struct {
	// Title is the page's title; empty: "mlbpf report: <model>".
	Title string
	// Source says where the history came from (a state directory, a
	// benchmark's run), shown under the title.
	Source string
	// MaxKeys caps the key table (default 200), the keys with the most
	// outcomes first.
	MaxKeys int
}

// Plot titles, in the page's order: one <figure> each, holding one
// <svg>.
var PlotTitles = []string{
	"Efficiency over time",
	"Outcomes per arm",
	"Mean outcome per arm over time",
	"Outcomes per period, per arm",
}

// maxPoints caps the points of a time series: longer histories are
// summed up in buckets of periods.
const maxPoints = 1500

// Section is one history on a page of several: a benchmark's runs.
type Section struct {
	// Name heads the section ("10 % loss"); empty: the model's name.
	Name    string
	History *history.History
	// Missing says why there is no history (History nil).
	Missing string
}

// WriteFile renders h to path, atomically.
func WriteFile(path string, h *history.History, opt Options) error {
	return WriteSections(path, []Section{{History: h}}, opt)
}

// WriteSections renders secs to path, atomically.
func WriteSections(path string, secs []Section, opt Options) error {
	var b bytes.Buffer
	if err := RenderSections(&b, secs, opt); err != nil {
		return err
	}
	if err := atomicfile.Write(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// Render writes the page for h to w.
func Render(w io.Writer, h *history.History, opt Options) error {
	if len(h.Periods) == 0 {
		return fmt.Errorf("rendering the report of %s: %w", h.Model, history.ErrNoHistory)
	}
	return RenderSections(w, []Section{{History: h}}, opt)
}

// RenderSections writes a page of several histories to w, one section
// each, in order.
func RenderSections(w io.Writer, secs []Section, opt Options) error {
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = 200
	}
	pg := page{Title: opt.Title, Source: opt.Source}
	for _, sec := range secs {
		sp, err := newSection(sec, opt)
		if err != nil {
			return err
		}
		pg.Sections = append(pg.Sections, sp)
	}
	if pg.Title == "" {
		pg.Title = "mlbpf report"
		if len(secs) == 1 && secs[0].History != nil {
			pg.Title += ": " + secs[0].History.Model
		}
	}
	if err := pageTemplate.Execute(w, &pg); err != nil {
		return fmt.Errorf("rendering the report: %w", err)
	}
	return nil
}

func newSection(sec Section, opt Options) (*section, error) {
	h := sec.History
	sp := &section{Name: sec.Name}
	if h == nil || len(h.Periods) == 0 {
		sp.Missing = cmp.Or(sec.Missing, "no history")
		return sp, nil
	}
	sp.Model, sp.Damaged = h.Model, h.Damaged
	sp.summarize(h)
	plots, err := drawPlots(h)
	if err != nil {
		return nil, fmt.Errorf("rendering the report of %s: %w", h.Model, err)
	}
	for i, svg := range plots {
		sp.Plots = append(sp.Plots, figure{Title: PlotTitles[i], Caption: captions[i], SVG: svg})
	}
	sp.Changes = modeChanges(h.Periods)
	sp.Decisions = decisions(h.Periods)
	sp.keys(h.Keys, opt.MaxKeys)
	return sp, nil
}

// Collector gathers the histories of a benchmark's runs, for one page:
// each run's daemon keeps its history in a state directory the benchmark
// removes after the run, so Add reads it first. A nil Collector gathers
// nothing. It is safe for concurrent use.
type Collector struct {
	mu   sync.Mutex
	secs []Section
}

// Add reads the history of model in a model's state directory (as
// pipeline.Env.StateDir: daemon.ModelStateDir) as a section named name.
// A missing or unreadable history is a section that says so.
func (c *Collector) Add(name, modelStateDir, model string) {
	if c == nil {
		return
	}
	sec := Section{Name: name}
	h, err := history.Read(history.Dir(modelStateDir), model)
	if err != nil {
		sec.Missing = err.Error()
	} else {
		sec.History = h
	}
	c.mu.Lock()
	c.secs = append(c.secs, sec)
	c.mu.Unlock()
}

// WriteFile renders the histories gathered to path.
func (c *Collector) WriteFile(path string, opt Options) error {
	c.mu.Lock()
	secs := slices.Clone(c.secs)
	c.mu.Unlock()
	return WriteSections(path, secs, opt)
}

var captions = []string{
	"The estimated gain in reward of the model over the kernel's default in the current mode (the line), " +
		"with its confidence interval (the band); the evidence restarts with each mode, whose changes are the dashed lines.",
	"The distribution of each arm's outcomes (rewards, larger is better) over the whole history: " +
		"median, quartiles, whiskers to 1.5 IQR, outliers beyond. n is the number of outcomes.",
	"Each arm's mean reward per period (or per bucket of periods, for long histories).",
	"How many outcomes of each arm were fed back per period.",
}

type page struct {
	Title, Source string
	Sections      []*section
}

type section struct {
	Name, Model, Missing string
	From, To             string
	Span                 string
	Periods              int
	Records, Lost        uint64
	Mode, State          string
	Efficiency           string
	Plots                []figure
	Changes              []change
	Decisions            []decisionRun
	KeyArms              []string
	Keys                 []keyRow
	KeysTime             string
	KeysSaved            bool
	KeysLeft             int
	Damaged              []string
}

type figure struct {
	Title, Caption string
	SVG            template.HTML
}

type change struct {
	Time, From, To, Reason string
}

type decisionRun struct {
	From, To    string
	Periods     int
	Decision    string
	Reason      string
	Changed     bool
	First, Last string
}

type keyRow struct {
	Key, Value, By string
	Arms           []string // per KeyArms: "n · mean"
}

const timeFormat = "2006-01-02 15:04:05"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func (pg *section) summarize(h *history.History) {
	ps := h.Periods
	first, last := ps[0], ps[len(ps)-1]
	pg.From, pg.To = fmtTime(first.Time), fmtTime(last.Time)
	pg.Span = last.Time.Sub(first.Time).Round(time.Second).String()
	pg.Periods = len(ps)
	for _, p := range ps {
		pg.Records += p.Records
		pg.Lost += p.Lost
	}
	pg.Mode, pg.State = last.Mode, last.State
	pg.Efficiency = "none yet"
	for i := len(ps) - 1; i >= 0; i-- {
		if e := ps[i].Efficiency; e != nil && e.N > 0 && e.BaselineN > 0 {
			pg.Efficiency = fmt.Sprintf("%s: effect %.4g [%.4g, %.4g] at %.0f%%, %d vs %d outcomes",
				e.Mode, e.Effect, e.Lower, e.Upper, 100*e.Confidence, e.N, e.BaselineN)
			break
		}
	}
}

// modeChanges lists the periods whose mode differs from the previous
// one's: the controller's changes and an operator's.
func modeChanges(ps []history.Period) []change {
	var out []change
	for i := 1; i < len(ps); i++ {
		if ps[i].Mode == ps[i-1].Mode {
			continue
		}
		c := change{Time: fmtTime(ps[i].Time), From: ps[i-1].Mode, To: ps[i].Mode, Reason: "an operator's command or a restart"}
		if d := ps[i].Decision; d.Changed {
			c.Reason = d.Reason
		}
		out = append(out, c)
	}
	return out
}

var digits = regexp.MustCompile(`[0-9.eE+-]+`)

// decisions collapses the controller's decisions into runs of periods
// that decided the same, their numbers aside; each run shows its last
// reason.
func decisions(ps []history.Period) []decisionRun {
	var out []decisionRun
	var shape string
	for _, p := range ps {
		d := p.Decision
		s := fmt.Sprint(d.From, d.To, d.Changed, digits.ReplaceAllString(d.Reason, "#"))
		if len(out) > 0 && s == shape && !d.Changed {
			r := &out[len(out)-1]
			r.Periods++
			r.Reason, r.Last = d.Reason, fmtTime(p.Time)
			continue
		}
		shape = s
		r := decisionRun{From: d.From, To: d.To, Periods: 1, Reason: d.Reason, Changed: d.Changed,
			First: fmtTime(p.Time), Last: fmtTime(p.Time), Decision: "stay in " + d.From}
		if d.Changed {
			r.Decision = d.From + " → " + d.To
		}
		out = append(out, r)
	}
	return out
}

func (pg *section) keys(k *history.Keys, limit int) {
	if k == nil {
		return
	}
	pg.KeysTime, pg.KeysSaved = fmtTime(k.Time), true
	total := func(key history.Key) int {
		n := 0
		for _, a := range key.Evidence {
			n += a.N
		}
		return n
	}
	keys := slices.Clone(k.Keys)
	slices.SortStableFunc(keys, func(a, b history.Key) int { return cmp.Compare(total(b), total(a)) })
	if len(keys) > limit {
		pg.KeysLeft = len(keys) - limit
		keys = keys[:limit]
	}
	arms := map[string]bool{}
	for _, key := range keys {
		for a := range key.Evidence {
			arms[a] = true
		}
	}
	pg.KeyArms = sortArms(arms)
	for _, key := range keys {
		row := keyRow{Key: key.Key, Value: key.Value, By: key.By}
		for _, a := range pg.KeyArms {
			if e, ok := key.Evidence[a]; ok {
				row.Arms = append(row.Arms, fmt.Sprintf("%d · %.4g", e.N, e.Mean))
			} else {
				row.Arms = append(row.Arms, "")
			}
		}
		pg.Keys = append(pg.Keys, row)
	}
}

// armOrder is the order arms are shown in: the comparisons first.
var armOrder = []string{"model", "control", "shadow", "no_rec", "fallback", "rejected", "skipped"}

func sortArms(set map[string]bool) []string {
	var out []string
	for _, a := range armOrder {
		if set[a] {
			out = append(out, a)
			delete(set, a)
		}
	}
	rest := make([]string, 0, len(set))
	for a := range set {
		rest = append(rest, a)
	}
	slices.Sort(rest)
	return append(out, rest...)
}

func finite(v ...float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}
