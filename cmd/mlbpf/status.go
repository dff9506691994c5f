package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// modelStatus is one model in 'mlbpf status -o json'.
type modelStatus struct {
	Model      string `json:"model"`
	State      string `json:"state"`
	Mode       string `json:"mode"`
	Generation uint32 `json:"generation"`
	// LeaseLeft is how long the kernel follows the model without a
	// renewal (negative: expired), LeaseAge how long since the last
	// renewal (known when the daemon published its lease); nil without a
	// lease.
	LeaseLeft *float64          `json:"lease_left_seconds"`
	LeaseAge  *float64          `json:"lease_age_seconds,omitempty"`
	Collab    uint32            `json:"collab_permille"`
	Holdout   uint32            `json:"holdout_permille"`
	Arms      map[string]uint64 `json:"arms"`
	Lost      uint64            `json:"lost"`
	Pins      string            `json:"pins"`
	// Daemon is the daemon's evidence (status.json): records, efficiency
	// and its confidence, decision; Live says whether the daemon that
	// published it is running.
	Daemon *daemon.Evidence `json:"daemon,omitempty"`
	Live   bool             `json:"live"`
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [flags] [SUBSYSTEM/MODEL...]", `
Show every pinned model, or the ones named: its lifecycle state and mode
and lease, as the kernel sees them in the pinned control block; how many
decisions took each arm and how many records were lost, from the pinned
maps; and, from the evidence the daemon publishes in the state directory,
the records it read, the efficiency estimate with its confidence interval,
and the mode controller's last decision. Works whether the daemon runs or
not (its evidence is then marked as not live).

With --check it is a liveness probe (the Kubernetes DaemonSet's): it exits
1 unless a daemon holds the socket's lock and renews the lease of every
pinned model it runs; a hung daemon fails it within one lease.`, `
  mlbpf status
  mlbpf status tcp/cc -o json
  mlbpf status --pin-root /sys/fs/bpf/mlbpf --state-dir /var/lib/mlbpf
  mlbpf status --check --config /etc/mlbpf/mlbpf.yaml`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	check := fs.Bool("check", false, "exit 1 unless a daemon runs and renews the lease of every model it runs (a liveness probe)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	if _, err := p.load(); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	list, pid, listErr := readStatus(p, fs.Args(), stderr)
	if list == nil && listErr != nil {
		return listErr
	}
	if *check {
		if err := checkLive(p.socket, pid, list); err != nil {
			return err
		}
	}
	if out.json() {
		if err := writeJSON(stdout, list); err != nil {
			return err
		}
		return listErr
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no models pinned under %s (start the daemon: mlbpf run)\n", p.pinRoot)
		return listErr
	}
	switch {
	case pid > 0:
		fmt.Fprintf(stdout, "daemon: running, pid %d, socket %s\n\n", pid, p.socket)
	case pid < 0:
		fmt.Fprintf(stdout, "daemon: running, socket %s\n\n", p.socket)
	default:
		fmt.Fprintf(stdout, "daemon: not running (the kernel follows no model whose lease has expired)\n\n")
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSTATE\tMODE\tMAX\tLEASE\tGEN\tDECISIONS\tRECORDS\tLOST\tEFFICIENCY")
	for _, s := range list {
		maxMode, records, eff := "-", "-", "-"
		if ev := s.Daemon; ev != nil {
			maxMode = ev.MaxMode
			records = fmt.Sprint(ev.Records)
			if !s.Live {
				records += " (last run)"
			}
			eff = formatEfficiency(ev)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", s.Model, s.State, s.Mode, maxMode,
			formatLease(s.LeaseLeft, s.LeaseAge), s.Generation, formatArms(s.Arms), records, s.Lost, eff)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range list {
		ev := s.Daemon
		if ev == nil {
			continue
		}
		notes := evidenceNotes(s.Model, ev)
		if ev.Lost+ev.Dropped > 0 {
			notes = append(notes, fmt.Sprintf("records came faster than the daemon read them: %d lost in the kernel (ring full), %d dropped past a portion's cap; %d dataset portions partial (EXTRACTED_PARTIALLY)",
				ev.Lost, ev.Dropped, ev.PartialPortions))
		}
		if !s.Live {
			notes = append(notes, fmt.Sprintf("evidence from %s, when the daemon (pid %d) last published", ev.Updated.Local().Format(time.DateTime), ev.PID))
		}
		for _, n := range notes {
			fmt.Fprintf(stdout, "%s: %s\n", s.Model, n)
		}
	}
	return listErr
}

// checkLive is 'mlbpf status --check': a daemon holds the lock on socket,
// and every model whose live evidence says the daemon runs it, and whose
// control block the kernel sees RUNNING, has a lease that has not
// expired (the daemon renews it every period, in every mode).
func checkLive(socket string, pid int, list []modelStatus) error {
	if pid == 0 {
		return fmt.Errorf("checking the daemon: no daemon holds %s: start it (mlbpf run)", daemon.LockPath(socket))
	}
	var errs []error
	for _, s := range list {
		ev := s.Daemon
		if !s.Live || !ev.Running || ev.OperatorStopped || s.State != model.StateRunning.String() {
			continue
		}
		if s.LeaseLeft == nil || *s.LeaseLeft <= 0 {
			errs = append(errs, fmt.Errorf("checking %s: the daemon (pid %d) runs it but its lease is %s: the daemon is not renewing it (hung or starved?): restart it",
				s.Model, ev.PID, formatLease(s.LeaseLeft, nil)))
		}
	}
	return errors.Join(errs...)
}

// readStatus reads every pinned model, or the ones named, with the
// daemon's evidence; it returns them with the daemon's pid (0 if none, -1
// if unknown). A model that is not pinned returns a nil list and an
// error; a failure to list some of the pins returns those listed and the
// error.
func readStatus(p *paths, names []string, warn io.Writer) ([]modelStatus, int, error) {
	pinned, listErr := loader.ListPinned(p.pinRoot)
	if len(names) > 0 {
		want := map[string]bool{}
		for _, a := range names {
			if _, _, err := daemon.SplitName(a); err != nil {
				return nil, 0, err
			}
			want[a] = true
		}
		var keep []loader.PinnedModel
		for _, pm := range pinned {
			name := pm.Subsystem + "/" + pm.Model
			if want[name] {
				keep = append(keep, pm)
				delete(want, name)
			}
		}
		for name := range want {
			return nil, 0, fmt.Errorf("%s: not pinned under %s", name, p.pinRoot)
		}
		pinned = keep
	}
	pid := p.daemonPID()
	now := loader.MonotonicNs()
	list := make([]modelStatus, 0, len(pinned))
	for _, pm := range pinned {
		name := pm.Subsystem + "/" + pm.Model
		s := modelStatus{
			Model: name, State: model.State(pm.Control.State).String(), Mode: model.Mode(pm.Control.Mode).String(),
			Generation: pm.Control.Generation, Collab: pm.Control.CollabPermille, Holdout: pm.Control.HoldoutPermille,
			Arms: map[string]uint64{}, Lost: pm.Lost, Pins: pm.Dir,
		}
		for i, n := range pm.Arms {
			s.Arms[model.Arm(i).String()] = n
		}
		ev, err := daemon.ReadEvidence(p.stateDir, name)
		if err != nil {
			fmt.Fprintln(warn, "mlbpf status:", err)
		}
		s.Daemon = ev
		s.Live = ev != nil && pid != 0 && (pid < 0 || ev.PID == pid)
		if pm.Control.LeaseExpiresNs != 0 {
			left := (float64(pm.Control.LeaseExpiresNs) - float64(now)) / 1e9
			s.LeaseLeft = &left
			if ev != nil && ev.Lease > 0 {
				age := ev.Lease.Seconds() - left
				s.LeaseAge = &age
			}
		}
		list = append(list, s)
	}
	return list, pid, listErr
}

// evidenceNotes are what the daemon's evidence says of a model beyond
// its figures: stopped by an operator, tripped, the controller's decision.
func evidenceNotes(name string, ev *daemon.Evidence) []string {
	var notes []string
	if ev.OperatorStopped {
		notes = append(notes, "stopped by an operator ('mlbpf start "+name+"' starts it)")
	}
	if ev.Tripped != "" {
		notes = append(notes, "tripped: "+ev.Tripped)
	}
	if ev.Decision != "" {
		notes = append(notes, "decision: "+ev.Decision)
	}
	return notes
}

func formatLease(left, age *float64) string {
	switch {
	case left == nil:
		return "none"
	case *left < 0:
		return fmt.Sprintf("expired %.1fs ago", -*left)
	case age != nil:
		return fmt.Sprintf("%.1fs left (renewed %.1fs ago)", *left, max(*age, 0))
	}
	return fmt.Sprintf("%.1fs left", *left)
}

func formatArms(arms map[string]uint64) string {
	var parts []string
	for i := range model.ArmCount {
		a := model.Arm(i).String()
		if n := arms[a]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", a, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// formatEfficiency shows the gain over the default with its interval,
// relative to the default's mean reward: "+31.2% [+29.0%, +33.4%] at 99%
// (n=420/410)".
func formatEfficiency(ev *daemon.Evidence) string {
	e := ev.Efficiency
	if e == nil || e.N < 2 || e.BaselineN < 2 {
		return "no evidence yet"
	}
	n := fmt.Sprintf("at %g%% (n=%d/%d)", e.Confidence*100, e.N, e.BaselineN)
	if e.Baseline == 0 {
		return fmt.Sprintf("%+.3g [%+.3g, %+.3g] %s", e.Effect, e.Lower, e.Upper, n)
	}
	b := 100 / abs(e.Baseline)
	return fmt.Sprintf("%+.1f%% [%+.1f%%, %+.1f%%] %s", e.Effect*b, e.Lower*b, e.Upper*b, n)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
