package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/history"
	"github.com/mlbpf/mlbpf/report"
)

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("report", "report [flags] SUBSYSTEM/MODEL -o FILE", `
Write a report of a model as one HTML file, self-contained (no script,
nothing fetched: open it anywhere, attach it to a ticket): its
efficiency over time with its confidence interval and the mode changes
marked, the outcomes of each arm as distributions and over time, the
mode controller's decisions with their reasons, and the model's keys
with their evidence.

The report is drawn from the history the daemon keeps in the state
directory (<state-dir>/SUBSYSTEM/MODEL/history/: a line every period,
bounded in size and age), so it works whether the daemon runs or not.`, `
  mlbpf report tcp/cc -o tcp-cc.html
  mlbpf report synthetic/demo --last 1h -o - > demo.html
  mlbpf report storage/readahead --state-dir /srv/mlbpf/state -o ra.html`, stdout, stderr)
	p := addPaths(fs)
	var out, title string
	var last time.Duration
	fs.StringVar(&out, "o", "", "the HTML file to write (- for stdout); required")
	fs.StringVar(&title, "title", "", "the page's title (default: mlbpf report: MODEL)")
	fs.DurationVar(&last, "last", 0, "only the last part of the history, 1h say (default: all of it)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf report tcp/cc -o report.html"); err != nil {
		return err
	}
	if out == "" {
		fmt.Fprintf(stderr, "%s: want -o FILE (- for stdout)\n\n", fs.Name())
		fs.help(stderr)
		return errUsage
	}
	name := fs.Arg(0)
	if _, _, err := daemon.SplitName(name); err != nil {
		return err
	}
	if _, err := p.load(); err != nil {
		return err
	}
	dir := history.Dir(daemon.ModelStateDir(p.stateDir, name))
	h, err := history.Read(dir, name)
	if errors.Is(err, history.ErrNoHistory) {
		return fmt.Errorf("reporting on %s: no history yet in %s: the daemon appends to it every period while it runs the model ('mlbpf run'); is --state-dir the daemon's?", name, dir)
	}
	if err != nil {
		return fmt.Errorf("reporting on %s: %w", name, err)
	}
	for _, d := range h.Damaged {
		fmt.Fprintf(stderr, "mlbpf report: skipping damaged history: %s\n", d)
	}
	if last > 0 {
		h.Periods = since(h.Periods, h.Periods[len(h.Periods)-1].Time.Add(-last))
	}
	opt := report.Options{Title: title, Source: "written " + time.Now().UTC().Format(time.DateTime) + " UTC by mlbpf report, from the daemon's history"}
	if out == "-" {
		return report.Render(stdout, h, opt)
	}
	if err := report.WriteFile(out, h, opt); err != nil {
		return err
	}
	ps := h.Periods
	fmt.Fprintf(stdout, "%s: %s, %d periods from %s to %s UTC, from %s\n", out, name, len(ps),
		ps[0].Time.UTC().Format(time.DateTime), ps[len(ps)-1].Time.UTC().Format(time.DateTime), dir)
	return nil
}

// since returns the periods from t on.
func since(ps []history.Period, t time.Time) []history.Period {
	for i, p := range ps {
		if !p.Time.Before(t) {
			return ps[i:]
		}
	}
	return ps[len(ps)-1:]
}
