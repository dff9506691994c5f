package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

const handshake = `
The command writes the model's pinned control block (under the pin
directory's lock), so the kernel follows at once, daemon or not. A running
daemon notices the block is not what it wrote and adopts the change
instead of overwriting it: a stopped model stays stopped (across restarts)
until 'mlbpf start'; an operator's EMERGENCY stays until an operator sets
another mode; a mode above the daemon's max_mode is refused here.`

func cmdMode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("mode", "mode [flags] SUBSYSTEM/MODEL MODE", `
Set a model's mode: emergency (the kernel's default, always), learning
(recommendations looked up, never applied), collaboration (applied to a
random share, the rest is the control group) or recommendation (applied,
but for a small holdout).`+handshake, `
  mlbpf mode tcp/cc emergency          # stop acting now; sticky until you say otherwise
  mlbpf mode tcp/cc learning           # leave EMERGENCY: learn again, then earn promotion
  mlbpf mode synthetic/demo collaboration -o json`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(2, "a model and a mode: mlbpf mode tcp/cc emergency"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	name := fs.Arg(0)
	mode, err := model.ParseMode(fs.Arg(1))
	if err != nil || !mode.Valid() {
		return fmt.Errorf("unknown mode %q (want emergency, learning, collaboration, recommendation)", fs.Arg(1))
	}
	return operatorWrite(p, out, stdout, name, "mode "+strings.ToLower(mode.String()), func(ev *daemon.Evidence, c *model.Control) error {
		if ev != nil && ev.MaxMode != "" {
			if maxMode, err := model.ParseMode(ev.MaxMode); err == nil && mode > maxMode {
				return fmt.Errorf("%s: %v is above the daemon's max_mode %v: raise max_mode in its configuration and restart it", name, mode, maxMode)
			}
		}
		c.Mode = mode
		return nil
	})
}

func cmdStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("start", "start [flags] SUBSYSTEM/MODEL", `
Start a model an operator stopped: its control block says STARTED; the
daemon starts it and renews its lease, and the kernel follows it again
(as its mode allows). With no daemon running the kernel stays on its
default until 'mlbpf run' renews the lease.`+handshake, `
  mlbpf start tcp/cc`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf start tcp/cc"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	name := fs.Arg(0)
	err := operatorWrite(p, out, stdout, name, "start", func(_ *daemon.Evidence, c *model.Control) error {
		switch c.State {
		case model.StateStarted, model.StateRunning:
			return nil // already
		case model.StateShuttingDown:
			return fmt.Errorf("%s is being destroyed: run 'mlbpf run' to create it again", name)
		}
		c.State, c.LeaseExpiresNs = model.StateStarted, 0
		return nil
	})
	if err == nil {
		err = daemon.SetOperatorStopped(p.stateDir, name, false)
	}
	return err
}

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stop", "stop [flags] SUBSYSTEM/MODEL", `
Stop a model: its control block says STOPPED and its lease is cleared, so
every hook takes the kernel's default at once. The daemon keeps it
stopped, across restarts, until 'mlbpf start'.`+handshake, `
  mlbpf stop tcp/cc`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf stop tcp/cc"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	name := fs.Arg(0)
	if _, err := p.load(); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	if err := daemon.SetOperatorStopped(p.stateDir, name, true); err != nil {
		return err
	}
	return operatorWrite(p, out, stdout, name, "stop", func(_ *daemon.Evidence, c *model.Control) error {
		if c.State != model.StateStarted && c.State != model.StateRunning {
			return nil // already
		}
		c.State, c.LeaseExpiresNs = model.StateStopped, 0
		return nil
	})
}

// controlChange is the result of an operator's write, -o json.
type controlChange struct {
	Model  string `json:"model"`
	Before struct {
		State string `json:"state"`
		Mode  string `json:"mode"`
	} `json:"before"`
	After struct {
		State      string `json:"state"`
		Mode       string `json:"mode"`
		Generation uint32 `json:"generation"`
	} `json:"after"`
	Changed bool `json:"changed"`
	// DaemonPID is the running daemon's pid, 0 if none; Adopted says
	// whether it was seen to take the change over in time, and Kernel is
	// what the control block said last.
	DaemonPID int    `json:"daemon_pid"`
	Adopted   bool   `json:"adopted"`
	Kernel    string `json:"kernel"`
}

// operatorWrite changes a model's pinned control block with fn, under the
// pin directory's lock, and reports the change; with a daemon running it
// waits (a few periods at most) to see the daemon take the change over.
func operatorWrite(p *paths, out *output, stdout io.Writer, name, what string, fn func(*daemon.Evidence, *model.Control) error) error {
	if _, err := p.load(); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	dir, err := daemon.PinnedDir(p.pinRoot, name)
	if err != nil {
		return err
	}
	pid := p.daemonPID()
	var ev *daemon.Evidence
	if pid != 0 {
		// The running daemon's evidence only: a model it does not run
		// may have some left from an earlier run.
		if e, _ := daemon.ReadEvidence(p.stateDir, name); e != nil && (pid < 0 || e.PID == pid) {
			ev = e
		}
	}
	written := time.Now()
	before, after, err := loader.UpdateControl(dir, func(c *model.Control) error { return fn(ev, c) })
	if err != nil {
		return err
	}
	var res controlChange
	res.Model, res.Changed, res.DaemonPID = name, before != after, pid
	res.Before.State, res.Before.Mode = before.State.String(), before.Mode.String()
	res.After.State, res.After.Mode, res.After.Generation = after.State.String(), after.Mode.String(), after.Generation
	last := after
	if pid != 0 && res.Changed {
		// The daemon adopts the change at its next write or period: it
		// writes the block again, or publishes that its model agrees.
		wait := 3 * time.Second
		if ev != nil && ev.Interval > 0 {
			wait = min(max(3*ev.Interval, 500*time.Millisecond), 10*time.Second)
		}
		sub, mod, _ := strings.Cut(name, "/")
		for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			pm, err := loader.ReadPinned(p.pinRoot, sub, mod)
			if err != nil {
				break
			}
			if cur := pinnedControl(pm.Control); cur != after {
				last, res.Adopted = cur, true
				break
			}
			if e, _ := daemon.ReadEvidence(p.stateDir, name); e != nil && e.Updated.After(written) &&
				e.Mode == after.Mode.String() && active(e.State) == active(after.State.String()) {
				res.Adopted = true
				break
			}
		}
	}
	res.Kernel = fmt.Sprintf("%v %v", last.State, last.Mode)
	if out.json() {
		return writeJSON(stdout, res)
	}
	switch {
	case !res.Changed:
		fmt.Fprintf(stdout, "%s: already %s %s: nothing to do\n", name, after.State, after.Mode)
		return nil
	default:
		fmt.Fprintf(stdout, "%s: %s: %s %s -> %s %s (generation %d)\n", name, what,
			before.State, before.Mode, after.State, after.Mode, after.Generation)
	}
	switch {
	case pid == 0:
		if after.State != model.StateRunning {
			fmt.Fprintf(stdout, "no daemon is running: the kernel is on its default until 'mlbpf run' renews the lease\n")
		}
	case res.Adopted:
		fmt.Fprintf(stdout, "the daemon (pid %d) adopted it: the kernel sees %s %s\n", pid, last.State, last.Mode)
	default:
		fmt.Fprintf(stdout, "the daemon (pid %d) adopts it at its next period\n", pid)
	}
	return nil
}

func pinnedControl(c loader.Control) model.Control {
	return model.Control{Mode: model.Mode(c.Mode), State: model.State(c.State), LeaseExpiresNs: c.LeaseExpiresNs,
		CollabPermille: c.CollabPermille, HoldoutPermille: c.HoldoutPermille, Generation: c.Generation}
}

func active(state string) bool {
	return state == model.StateStarted.String() || state == model.StateRunning.String()
}
