package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// rollbackReport is 'mlbpf rollback -o json'.
type rollbackReport struct {
	DryRun    bool     `json:"dry_run"`
	DaemonPID int      `json:"daemon_pid"`
	Models    []string `json:"models"`
	Commands  []string `json:"commands"`
	Errors    []string `json:"errors,omitempty"`
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rollback", "rollback [--dry-run] [flags]", `
Undo everything mlbpf put in the kernel, for every pinned model:

  1. its control block to EMERGENCY and STOPPED: every hook takes the
     kernel's default at once;
  2. the daemon, if one runs, stopped (SIGTERM) and waited for;
  3. its pins removed, which detaches its pinned programs (tcp/cc's
     sock_ops link, a synthetic model's live hook: left attached by a
     daemon that died) and frees its maps.

The learned state in the state directory is kept (remove it by hand to
forget what was learned). --dry-run prints what would be done, with the
commands an administrator could run by hand instead (bpftool, kill, rm).

--restore does only what the kernel does not do by itself once the
daemon is gone: it puts back what the models applied from user space
(none of tcp/cc's or synthetic's: they apply in BPF, and the kernel takes
its default when the lease runs out), leaving the pins for the next
daemon. The systemd unit runs it after the daemon stops (ExecStopPost),
however it stopped.`, `
  mlbpf rollback --dry-run
  mlbpf rollback --restore
  mlbpf rollback
  mlbpf rollback -o json`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	dryRun := fs.Bool("dry-run", false, "print what would be done, and the commands to do it by hand, and do nothing")
	restore := fs.Bool("restore", false, "only put back what the models applied from user space, leaving the pins (the unit's ExecStopPost)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(0, "no arguments"); err != nil {
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
	models, err := pinnedNames(p.pinRoot)
	if err != nil {
		return err
	}
	if *restore {
		return restoreModels(stdout, out, p.pinRoot, models)
	}
	rep := rollbackReport{DryRun: *dryRun, DaemonPID: max(p.daemonPID(), 0), Models: models}
	say := func(format string, a ...any) {
		if !out.json() {
			fmt.Fprintf(stdout, format+"\n", a...)
		}
	}
	fail := func(err error) {
		rep.Errors = append(rep.Errors, err.Error())
		if !out.json() {
			fmt.Fprintln(stderr, "mlbpf rollback:", err)
		}
	}
	if len(models) == 0 && rep.DaemonPID == 0 {
		say("nothing to roll back: no models pinned under %s and no daemon running", p.pinRoot)
		if out.json() {
			return writeJSON(stdout, rep)
		}
		return nil
	}
	if *dryRun {
		say("would roll back %d model(s) under %s:", len(models), p.pinRoot)
	}

	// 1. EMERGENCY and STOPPED: the kernel's default at once.
	for _, name := range models {
		dir := filepath.Join(p.pinRoot, filepath.FromSlash(name))
		pm, err := loader.ReadPinned(p.pinRoot, strings.Split(name, "/")[0], strings.Split(name, "/")[1])
		next := pinnedControl(pm.Control)
		next.Mode, next.State, next.LeaseExpiresNs, next.Generation = model.ModeEmergency, model.StateStopped, 0, next.Generation+1
		rep.Commands = append(rep.Commands, bpftoolUpdate(dir, next))
		if *dryRun {
			say("  %s: %s %s -> EMERGENCY STOPPED", name, model.State(pm.Control.State), model.Mode(pm.Control.Mode))
			continue
		}
		if err != nil {
			// Not a control block mlbpf can read (a stale version's, a
			// foreign or damaged pin): nothing of ours follows it. Its
			// pins go below all the same.
			say("%s: %v: left as it is, its pins are removed below", name, err)
			continue
		}
		if _, _, err := loader.UpdateControl(dir, func(c *model.Control) error {
			c.Mode, c.State, c.LeaseExpiresNs = model.ModeEmergency, model.StateStopped, 0
			return nil
		}); err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
			continue
		}
		say("%s: EMERGENCY, STOPPED: the kernel is on its default", name)
	}

	// 2. The daemon, which would otherwise keep its maps and programs.
	if pid := rep.DaemonPID; pid > 0 {
		rep.Commands = append(rep.Commands, fmt.Sprintf("kill %d", pid))
		if *dryRun {
			say("  the daemon (pid %d) stopped", pid)
		} else if err := stopDaemon(ctx, p, pid); err != nil {
			fail(err)
		} else {
			say("the daemon (pid %d) stopped", pid)
		}
	}

	// 3. The pins.
	for _, name := range models {
		dir := filepath.Join(p.pinRoot, filepath.FromSlash(name))
		rep.Commands = append(rep.Commands, "rm -r "+dir)
		if *dryRun {
			say("  %s: pins removed (%s)", name, dir)
			continue
		}
		if err := daemon.Rollback(p.pinRoot, name); err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
			continue
		}
		// A fresh start after a rollback starts the model: forget an
		// operator's stop along with the pins.
		_ = daemon.SetOperatorStopped(p.stateDir, name, false)
		say("%s: pins removed", name)
	}
	if !*dryRun {
		_ = os.Remove(p.pinRoot) // if empty
	}
	if out.json() {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else if *dryRun {
		fmt.Fprintf(stdout, "\nBy hand:\n")
		for _, c := range rep.Commands {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
		fmt.Fprintf(stdout, "\nThe learned state in %s is kept either way.\n", p.stateDir)
	} else {
		fmt.Fprintf(stdout, "rolled back; the learned state in %s is kept\n", p.stateDir)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("rollback incomplete: %d error(s)", len(rep.Errors))
	}
	return nil
}

// pinnedNames lists the "subsystem/model" directories under root, readable
// or not.
func pinnedNames(root string) ([]string, error) {
	subs, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}
	var out []string
	for _, s := range subs {
		if !s.IsDir() {
			continue
		}
		models, err := os.ReadDir(filepath.Join(root, s.Name()))
		if err != nil {
			return nil, err
		}
		for _, m := range models {
			if m.IsDir() {
				out = append(out, s.Name()+"/"+m.Name())
			}
		}
	}
	return out, nil
}

// bpftoolUpdate is the command writing c into the control block pinned in
// dir: c in the latch's first copy, sequence count 0 (even: the appliers
// read the first copy), spare copy zero (struct mlbpf_control).
func bpftoolUpdate(dir string, c model.Control) string {
	var v [64]byte
	binary.NativeEndian.PutUint32(v[0:], uint32(c.Mode))
	binary.NativeEndian.PutUint32(v[4:], uint32(c.State))
	binary.NativeEndian.PutUint64(v[8:], c.LeaseExpiresNs)
	binary.NativeEndian.PutUint32(v[16:], c.CollabPermille)
	binary.NativeEndian.PutUint32(v[20:], c.HoldoutPermille)
	binary.NativeEndian.PutUint32(v[24:], c.Generation)
	var hex strings.Builder
	for i, b := range v {
		if i > 0 {
			hex.WriteByte(' ')
		}
		fmt.Fprintf(&hex, "%02x", b)
	}
	return fmt.Sprintf("bpftool map update pinned %s key hex 00 00 00 00 value hex %s", filepath.Join(dir, "control"), hex.String())
}

// stopDaemon asks the daemon to shut down, on its socket or else with
// SIGTERM, and waits for its lock to be released.
func stopDaemon(ctx context.Context, p *paths, pid int) error {
	asked := false
	if c, err := agent.Dial(ctx, p.socket); err == nil {
		_, _ = c.Hello(ctx, "mlbpf rollback")
		asked = c.Shutdown(ctx) == nil
		c.Close()
	}
	if !asked {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("stopping the daemon (pid %d): %w", pid, err)
		}
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if p.daemonPID() == 0 {
			return nil
		}
	}
	return fmt.Errorf("the daemon (pid %d) did not stop within 15s: kill it (kill -9 %d) and run rollback again", pid, pid)
}

// restoreModels is 'mlbpf rollback --restore'.
func restoreModels(stdout io.Writer, out *output, pinRoot string, models []string) error {
	type restored struct {
		Model string `json:"model"`
		Did   string `json:"restored,omitempty"`
		Error string `json:"error,omitempty"`
	}
	var rep []restored
	var errs []error
	for _, name := range models {
		did, err := daemon.Restore(pinRoot, name)
		r := restored{Model: name, Did: did}
		if err != nil {
			r.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		rep = append(rep, r)
		if out.json() {
			continue
		}
		switch {
		case err != nil:
		case did == "":
			fmt.Fprintf(stdout, "%s: applied in BPF: nothing to restore\n", name)
		default:
			fmt.Fprintf(stdout, "%s: %s\n", name, did)
		}
	}
	if out.json() {
		if rep == nil {
			rep = []restored{}
		}
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
