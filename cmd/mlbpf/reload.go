package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mlbpf/mlbpf/agent"
)

func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "reload [flags]", `
Have the running daemon re-read its configuration file, as SIGHUP does
(systemctl reload mlbpf), and apply it without a restart: a model's
max_mode, interval, lease, shares, controller and agent_timeout are
retuned in place (the model keeps its mode, lowered to a lower max_mode,
its evidence, its spooled portions and its pins, and stays attached); a
model removed or disabled is stopped (the kernel on its default, its pins
and state kept); a model added is opened and started, while the daemon
still holds its capabilities (--keep-capabilities); the log level and the
metrics endpoint change.

What cannot change under a running daemon (pin_root, state_dir, socket,
the log format, the fleet section, a model's learner, a model shared
with the fleet being removed, a subsystem section its subsystem
takes only at start), and a file that does not load or check, refuse the
whole reload, saying why: the running configuration stays, and the
command exits non-zero. It exits 0 once every change is in place.`, `
  mlbpf reload
  mlbpf reload -o json`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	var wait time.Duration
	addWait(fs, &wait)
	if err := fs.parseArgs(args, 0, "no arguments", out); err != nil {
		return err
	}
	pid := p.daemonPID()
	if pid == 0 {
		return fmt.Errorf("no daemon is running on %s: nothing to reload; start one ('mlbpf run', or its service)", p.socket)
	}
	c, h, err := dialDaemon(ctx, p, pid, "mlbpf reload", wait)
	if errors.Is(err, errDaemonGone) {
		return fmt.Errorf("the daemon on %s stopped: nothing to reload; start one ('mlbpf run', or its service)", p.socket)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	res, err := c.Reload(ctx)
	if err != nil {
		return unwrapRemote(err)
	}
	if out.json() {
		return writeJSON(stdout, struct {
			agent.ReloadResult
			DaemonPID int `json:"daemon_pid"`
		}{res, h.PID})
	}
	if len(res.Changes) == 0 {
		fmt.Fprintf(stdout, "the daemon (pid %d) reloaded %s: nothing changed\n", h.PID, res.File)
		return nil
	}
	fmt.Fprintf(stdout, "the daemon (pid %d) reloaded %s:\n", h.PID, res.File)
	for _, c := range res.Changes {
		fmt.Fprintf(stdout, "  %s\n", c)
	}
	return nil
}

// parseArgs parses args, wanting n arguments (what says which), and
// checks the output format.
func (f *flags) parseArgs(args []string, n int, what string, out *output) error {
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.want(n, what); err != nil {
		return err
	}
	return out.check()
}
