package readahead

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// WatchdogConfig configures the watchdog of one readahead model.
type WatchdogConfig struct {
	// PinDir is the model's pin directory, holding its control block.
	PinDir string
	// StateDir holds the applier's record of original values.
	StateDir string
	// PID is the daemon's process id.
	PID int
	// Poll is how often the watchdog looks; 0 means 100 ms.
	Poll time.Duration
}

func (c WatchdogConfig) args() []string {
	return []string{"--pin-dir", c.PinDir, "--state-dir", c.StateDir, "--pid", strconv.Itoa(c.PID)}
}

// ParseWatchdogArgs parses the arguments StartWatchdog passes.
func ParseWatchdogArgs(args []string, stderr io.Writer) (WatchdogConfig, error) {
	var c WatchdogConfig
	fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.PinDir, "pin-dir", "", "the model's pin directory")
	fs.StringVar(&c.StateDir, "state-dir", "", "the model's state directory")
	fs.IntVar(&c.PID, "pid", 0, "the daemon's process id")
	fs.DurationVar(&c.Poll, "poll", 100*time.Millisecond, "how often to look")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.PinDir == "" || c.StateDir == "" || c.PID <= 0 {
		return c, errors.New("parsing watchdog arguments: --pin-dir, --state-dir and --pid are all needed")
	}
	return c, nil
}

// StartWatchdog starts the watchdog as its own process, in its own
// process group, so that it outlives a SIGKILL of the daemon (and a
// Ctrl-C on the daemon's terminal): argv is the command that runs
// RunWatchdog (for mlbpf: the mlbpf binary and "watchdog"); the
// configuration's flags are appended.
func StartWatchdog(argv []string, cfg WatchdogConfig) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("starting the readahead watchdog: no command")
	}
	cmd := exec.Command(argv[0], append(append([]string(nil), argv[1:]...), cfg.args()...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the readahead watchdog: %w", err)
	}
	return cmd, nil
}

// RunWatchdog watches the model's control block and the daemon. When the
// model may no longer act (its lease ran out, EMERGENCY, not RUNNING) or
// the daemon is gone, it restores every device the applier recorded. It
// returns once the daemon is gone, or the model is stopped or its pins
// removed, and nothing is left to restore.
func RunWatchdog(ctx context.Context, cfg WatchdogConfig, logf func(string, ...any)) error {
	signal.Ignore(syscall.SIGPIPE, syscall.SIGHUP) // outlive the daemon's pipes and terminal
	if cfg.Poll == 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var pinned *ebpf.Map
	var ctl *loader.ControlMap
	defer func() {
		if pinned != nil {
			pinned.Close()
		}
	}()
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	for {
		reason, done := "", false
		if ctl == nil {
			m, err := ebpf.LoadPinnedMap(filepath.Join(cfg.PinDir, "control"), nil)
			if err == nil {
				if ctl, err = loader.NewControlMap(m); err != nil {
					m.Close()
				} else {
					pinned = m
				}
			}
		}
		var c model.Control
		var err error
		if ctl != nil {
			c, err = ctl.LoadControl()
		}
		switch {
		case ctl == nil:
			reason, done = "the model's pins are gone", true
		case err != nil:
			reason, done = "the control block cannot be read", true
		case c.State != model.StateRunning:
			reason = fmt.Sprintf("the model is %v", c.State)
			done = c.State == model.StateStopped || c.State == model.StateShuttingDown
		case c.Mode != model.ModeCollaboration && c.Mode != model.ModeRecommendation:
			reason = fmt.Sprintf("the model is in %v", c.Mode)
		case loader.MonotonicNs() > c.LeaseExpiresNs:
			reason = "the model's lease ran out"
		}
		if !processRunning(cfg.PID) {
			reason, done = fmt.Sprintf("the daemon (pid %d) is gone", cfg.PID), true
		}
		if _, err := os.Stat(cfg.PinDir); errors.Is(err, os.ErrNotExist) {
			reason, done = "the model's pins are gone", true
		}
		if reason != "" {
			msgs, err := Restore(cfg.StateDir)
			for _, m := range msgs {
				logf("readahead watchdog: %s: %s", reason, m)
			}
			if err != nil {
				logf("readahead watchdog: restoring: %v", err)
			} else if done {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// processRunning reports whether pid runs: a zombie (killed, and not yet
// reaped by whoever inherited it) does not.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return unix.Kill(pid, 0) != unix.ESRCH // no procfs: ask the kernel
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
