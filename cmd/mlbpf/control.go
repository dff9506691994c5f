package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

const handshake = `

With a daemon running, the command asks it on its socket (waiting, up to
--wait, for a daemon still starting to answer). The daemon refuses what
it will not do (a mode above its max_mode; a mode other than emergency
for a stopped model, where the kernel takes its default whatever the
mode), writes the model's control block (the kernel follows at once),
adopts the change, and answers once the kernel holds what was asked: the
mode set, and acting in it (RUNNING, a live lease) unless it is
EMERGENCY; the model running; the model stopped. The command exits 0
only then, and otherwise says why and what to do. A stopped model stays
stopped, across restarts, until 'mlbpf start'; an operator's EMERGENCY
stays until an operator sets another mode.

With no daemon running the command writes the pinned block itself (under
the pin directory's lock), and only for what takes effect with no daemon:
'stop' and 'mode emergency' put the kernel on its default at once, and
the next daemon keeps them; 'start' and the other modes need a daemon to
renew the lease, and are refused.`

func cmdMode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("mode", "mode [flags] SUBSYSTEM/MODEL MODE", `
Set a model's mode: emergency (the kernel's default, always), learning
(recommendations looked up, never applied), collaboration (applied to a
random share, the rest is the control group) or recommendation (applied,
but for a small holdout).`+handshake, `
  mlbpf mode tcp/cc emergency          # stop acting now; sticky until you say otherwise
  mlbpf mode tcp/cc learning           # leave EMERGENCY: learn again, then earn promotion
  mlbpf mode synthetic/demo collaboration -o json`, stdout, stderr)
	o := addOperatorFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(2, "a model and a mode: mlbpf mode tcp/cc emergency"); err != nil {
		return err
	}
	if err := o.out.check(); err != nil {
		return err
	}
	mode, err := model.ParseMode(fs.Arg(1))
	if err != nil || !mode.Valid() {
		return fmt.Errorf("unknown mode %q (want emergency, learning, collaboration, recommendation)", fs.Arg(1))
	}
	return o.command(ctx, stdout, agent.ControlRequest{Model: fs.Arg(0), Action: agent.ActionMode, Mode: strings.ToLower(mode.String())})
}

func cmdStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("start", "start [flags] SUBSYSTEM/MODEL", `
Start a model an operator stopped: the daemon starts it, in the mode its
control block holds (capped by max_mode; an operator's EMERGENCY stays),
and renews its lease, so the kernel follows it again.`+handshake, `
  mlbpf start tcp/cc`, stdout, stderr)
	o := addOperatorFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf start tcp/cc"); err != nil {
		return err
	}
	if err := o.out.check(); err != nil {
		return err
	}
	return o.command(ctx, stdout, agent.ControlRequest{Model: fs.Arg(0), Action: agent.ActionStart})
}

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stop", "stop [flags] SUBSYSTEM/MODEL", `
Stop a model: its control block says STOPPED and its lease is cleared, so
every hook takes the kernel's default at once. The daemon keeps it
stopped, across restarts, until 'mlbpf start'.`+handshake, `
  mlbpf stop tcp/cc`, stdout, stderr)
	o := addOperatorFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf stop tcp/cc"); err != nil {
		return err
	}
	if err := o.out.check(); err != nil {
		return err
	}
	return o.command(ctx, stdout, agent.ControlRequest{Model: fs.Arg(0), Action: agent.ActionStop})
}

// controlChange is the result of an operator's command, -o json.
type controlChange struct {
	Model  string `json:"model"`
	Before struct {
		State string `json:"state"`
		Mode  string `json:"mode"`
	} `json:"before"`
	// After is the block the command wrote, when Changed.
	After struct {
		State      string `json:"state"`
		Mode       string `json:"mode"`
		Generation uint32 `json:"generation"`
	} `json:"after"`
	Changed bool `json:"changed"`
	// DaemonPID is the pid of the daemon that carried the command out, 0
	// if none ran; Kernel is the block the kernel held when the command
	// returned ("RUNNING LEARNING"), where the command asked.
	DaemonPID int                `json:"daemon_pid"`
	Kernel    string             `json:"kernel"`
	Block     agent.ControlBlock `json:"kernel_block"`
}

// operatorFlags are the flags of 'mlbpf mode', 'start' and 'stop'.
type operatorFlags struct {
	p    *paths
	out  *output
	wait time.Duration
}

func addOperatorFlags(fs *flags) *operatorFlags {
	o := &operatorFlags{p: addPaths(fs), out: addOutput(fs, "text")}
	addWait(fs, &o.wait)
	return o
}

func addWait(fs *flags, d *time.Duration) {
	fs.DurationVar(d, "wait", 30*time.Second, "how long to wait for a daemon that is starting to answer on its socket")
}

// errDaemonGone says the daemon that held the lock is gone.
var errDaemonGone = errors.New("the daemon went away")

// command carries an operator's command out (see carry) and reports it.
func (o *operatorFlags) command(ctx context.Context, stdout io.Writer, req agent.ControlRequest) error {
	res, pid, err := o.carry(ctx, req)
	if err != nil {
		return err
	}
	return o.report(stdout, req, res, pid)
}

// carry carries an operator's command out: through the daemon when one
// runs, else on the pinned block (see handshake). It returns the result
// and the pid of the daemon that carried it out, 0 if none.
func (o *operatorFlags) carry(ctx context.Context, req agent.ControlRequest) (agent.ControlResult, int, error) {
	if _, _, err := daemon.SplitName(req.Model); err != nil {
		return agent.ControlResult{}, 0, err
	}
	cfg, err := o.p.load()
	if err != nil {
		return agent.ControlResult{}, 0, err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return agent.ControlResult{}, 0, err
	}
	for range 3 {
		if pid := o.p.daemonPID(); pid != 0 {
			res, pid, err := o.askDaemon(ctx, pid, req)
			if errors.Is(err, errDaemonGone) {
				continue // it stopped meanwhile: on the pins
			}
			return res, pid, err
		}
		res, err := o.writePinned(cfg, req)
		if err != nil {
			return res, 0, err
		}
		if o.p.daemonPID() != 0 {
			// A daemon took its lock meanwhile: it may have read the
			// block before the write. Ask it.
			continue
		}
		return res, 0, nil
	}
	return agent.ControlResult{}, 0, fmt.Errorf("%s: a daemon keeps starting and stopping: check its logs, and retry", req.Model)
}

// dialDaemon connects to the daemon holding the lock (pid), waiting up to
// wait for one still starting to answer on its socket; errDaemonGone if
// none holds the lock any more.
func dialDaemon(ctx context.Context, p *paths, pid int, who string, wait time.Duration) (*agent.Client, agent.Hello, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := agent.Dial(ctx, p.socket)
		if err == nil {
			h, herr := c.Hello(ctx, who)
			if herr == nil {
				return c, h, nil
			}
			c.Close()
			err = herr
		}
		switch {
		case p.daemonPID() == 0:
			return nil, agent.Hello{}, errDaemonGone
		case ctx.Err() != nil:
			return nil, agent.Hello{}, context.Cause(ctx)
		case time.Now().After(deadline):
			who := "a daemon"
			if pid > 0 {
				who = fmt.Sprintf("the daemon (pid %d)", pid)
			}
			return nil, agent.Hello{}, fmt.Errorf("%s holds %s but has not answered on %s for %v (%v): it is still opening its models (see its logs) or is stuck: nothing was changed; retry (--wait), or stop it",
				who, daemon.LockPath(p.socket), p.socket, wait, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// askDaemon has the daemon carry req out, and returns its answer and pid.
func (o *operatorFlags) askDaemon(ctx context.Context, pid int, req agent.ControlRequest) (agent.ControlResult, int, error) {
	c, h, err := dialDaemon(ctx, o.p, pid, "mlbpf "+req.Action, o.wait)
	if err != nil {
		return agent.ControlResult{}, 0, err
	}
	defer c.Close()
	res, err := c.Control(ctx, req)
	var re *agent.RemoteError
	switch {
	case errors.As(err, &re):
		return res, h.PID, errors.New(re.Msg)
	case err != nil:
		return res, h.PID, fmt.Errorf("%s: the daemon (pid %d) did not answer: %w: check 'mlbpf status %s', and retry", req.Model, h.PID, err, req.Model)
	}
	return res, h.PID, nil
}

// writePinned carries req out on the pinned block, with no daemon
// running: only what puts the kernel on its default.
func (o *operatorFlags) writePinned(cfg *config.Config, req agent.ControlRequest) (agent.ControlResult, error) {
	name := req.Model
	noDaemon := func(then string) error {
		return fmt.Errorf("%s: no daemon is running, and only a daemon renews the lease the kernel acts on: nothing was changed; start one ('mlbpf run', or its service), then %s", name, then)
	}
	switch {
	case req.Action == agent.ActionStart:
		return agent.ControlResult{}, noDaemon("'mlbpf start " + name + "'")
	case req.Action == agent.ActionMode && req.Mode != "emergency":
		mode, _ := model.ParseMode(req.Mode)
		if m := cfg.Find(name); m != nil {
			if maxMode := m.Options(cfg.Interval).MaxMode; mode > maxMode {
				return agent.ControlResult{}, fmt.Errorf("%s: %v is above max_mode %v in the configuration: nothing was changed; raise max_mode there, start a daemon ('mlbpf run'), then set the mode", name, mode, maxMode)
			}
		}
		return agent.ControlResult{}, noDaemon(fmt.Sprintf("'mlbpf mode %s %s'", name, req.Mode))
	}
	dir, err := daemon.PinnedDir(o.p.pinRoot, name)
	if err != nil {
		return agent.ControlResult{}, err
	}
	before, after, err := loader.UpdateControl(dir, func(c *model.Control) error {
		if req.Action == agent.ActionStop {
			if c.State == model.StateStarted || c.State == model.StateRunning {
				c.State, c.LeaseExpiresNs = model.StateStopped, 0
			}
			return nil
		}
		c.Mode = model.ModeEmergency
		if c.State == model.StateUnknown || c.State == model.StateCreated {
			// A model that never ran: the next daemon would take the
			// block for a fresh one, and its mode for nothing.
			c.State = model.StateStopped
		}
		return nil
	})
	if err != nil {
		return agent.ControlResult{}, err
	}
	if req.Action == agent.ActionStop {
		// Remembered for the next daemon, changed or not.
		if err := daemon.SetOperatorStopped(o.p.stateDir, name, true); err != nil {
			return agent.ControlResult{}, err
		}
	}
	return agent.ControlResult{Model: name, Changed: before != after, Before: daemon.ControlBlock(before), Written: daemon.ControlBlock(after), Kernel: daemon.ControlBlock(after)}, nil
}

// report prints what a command did.
func (o *operatorFlags) report(stdout io.Writer, req agent.ControlRequest, res agent.ControlResult, pid int) error {
	var ch controlChange
	ch.Model, ch.Changed, ch.DaemonPID = res.Model, res.Changed, pid
	ch.Before.State, ch.Before.Mode = res.Before.State, res.Before.Mode
	ch.After.State, ch.After.Mode, ch.After.Generation = res.Written.State, res.Written.Mode, res.Written.Generation
	ch.Kernel, ch.Block = res.Kernel.State+" "+res.Kernel.Mode, res.Kernel
	if o.out.json() {
		return writeJSON(stdout, ch)
	}
	what := req.Action
	if req.Action == agent.ActionMode {
		what += " " + req.Mode
	}
	if res.Changed {
		fmt.Fprintf(stdout, "%s: %s: %s %s -> %s %s (generation %d)\n", res.Model, what,
			res.Before.State, res.Before.Mode, res.Written.State, res.Written.Mode, res.Written.Generation)
	} else {
		fmt.Fprintf(stdout, "%s: %s: already %s %s\n", res.Model, what, res.Before.State, res.Before.Mode)
	}
	k := res.Kernel
	kernel := fmt.Sprintf("%s %s (generation %d", k.State, k.Mode, k.Generation)
	if k.LeaseLeftMs > 0 {
		kernel += fmt.Sprintf(", lease %v left", (time.Duration(k.LeaseLeftMs) * time.Millisecond).Round(100*time.Millisecond))
	}
	kernel += ")"
	switch {
	case pid != 0:
		fmt.Fprintf(stdout, "the daemon (pid %d) holds it: the kernel has %s\n", pid, kernel)
	default:
		fmt.Fprintf(stdout, "no daemon is running: the kernel has %s, and takes its default; the next daemon keeps it\n", kernel)
	}
	return nil
}

func pinnedControl(c loader.Control) model.Control {
	return model.Control{Mode: model.Mode(c.Mode), State: model.State(c.State), LeaseExpiresNs: c.LeaseExpiresNs,
		CollabPermille: c.CollabPermille, HoldoutPermille: c.HoldoutPermille, Generation: c.Generation}
}
