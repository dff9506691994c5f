package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// learningConfig is the embedded default's policy for a synthetic model:
// the model may learn, never act.
const learningConfig = `
interval: 100ms
models:
  - name: synthetic/demo
    max_mode: learning
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
`

// operatorPromise is what an operator command that exited 0 claims of the
// control block the kernel reads.
type operatorPromise struct {
	args []string
	// epoch is the daemon's life the command succeeded in: the state it
	// promised lasts only as long as that life; a mode, and a stop, last
	// across restarts.
	epoch int
}

// broken says how c breaks the promise, "" if it keeps it. full checks
// what lasts only during the life of the daemon that took the command.
func (p operatorPromise) broken(c loader.Control, full bool) string {
	state, mode := model.State(c.State), model.Mode(c.Mode)
	acting := state == model.StateRunning && c.LeaseExpiresNs > loader.MonotonicNs()
	switch p.args[0] {
	case "mode":
		want, _ := model.ParseMode(p.args[1])
		switch {
		case mode != want:
			return fmt.Sprintf("the kernel has mode %v", mode)
		case want != model.ModeEmergency && full && !acting:
			return fmt.Sprintf("the kernel does not act in it: %v, lease %s", state, leaseLeft(c))
		}
	case "start":
		if full && !acting {
			return fmt.Sprintf("the model does not run: %v, lease %s", state, leaseLeft(c))
		}
	case "stop":
		if state == model.StateStarted || state == model.StateRunning {
			return fmt.Sprintf("the model is %v", state)
		}
	}
	return ""
}

func leaseLeft(c loader.Control) string {
	if now := loader.MonotonicNs(); c.LeaseExpiresNs > now {
		return time.Duration(c.LeaseExpiresNs-now).String() + " left"
	}
	return "expired"
}

// TestOperatorCommandsThroughStartup issues 'mlbpf mode', 'start' and
// 'stop' at every point of a daemon's life: before its pins exist, with
// pins and no daemon, while a daemon (the real binary, in a process of
// its own) starts (its lock taken, the model not open yet, opening), and
// while it runs; and again across restarts. A command that exits 0 must
// leave the kernel where it asked, and keep it there until the next
// command (a mode, an operator's EMERGENCY and a stop across restarts
// too): the mode set, acting in it (RUNNING, a live lease) unless it is
// EMERGENCY; the model running; the model stopped. One that does not
// must say why. max_mode is LEARNING (the embedded default's), so
// COLLABORATION and RECOMMENDATION must be refused whenever they are
// asked.
//
// (This test found 'mlbpf mode synthetic/demo recommendation' reporting
// success when the daemon had not yet published its max_mode, and a
// block written before the model was open, which the daemon then
// overwrote.)
func TestOperatorCommandsThroughStartup(t *testing.T) {
	s := newSession(t, fmt.Sprintf(learningConfig, syscallLoad(t)))
	commands := [][]string{
		{"mode", "synthetic/demo", "recommendation"},
		{"mode", "synthetic/demo", "collaboration"},
		{"mode", "synthetic/demo", "learning"},
		{"mode", "synthetic/demo", "emergency"},
		{"start", "synthetic/demo"},
		{"stop", "synthetic/demo"},
	}
	r := rand.New(rand.NewPCG(11, 1))
	control := filepath.Join(s.root, "synthetic", "demo", "control")
	read := func() (loader.Control, bool) {
		pm, err := loader.ReadPinned(s.root, "synthetic", "demo")
		if err != nil {
			if _, serr := os.Stat(control); os.IsNotExist(serr) {
				return loader.Control{}, false
			}
			t.Fatal(err)
		}
		return pm.Control, true
	}
	var (
		epoch  int
		last   *operatorPromise // the last command that exited 0
		phases = map[string]int{}
		ok     = map[string]int{}
		logs   = func() string { return s.logs.String() }
	)
	// fail reports a broken promise; the first few, then the logs.
	failures := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		if failures++; failures == 8 {
			t.Fatalf("too many failures; the last daemon's logs:\n%s", logs())
		}
	}
	// check holds the last promise against the block the kernel has now.
	check := func(when string) {
		t.Helper()
		c, pinned := read()
		if last == nil || !pinned {
			return
		}
		if why := last.broken(c, last.epoch == epoch); why != "" {
			fail("'mlbpf %s' exited 0; %s %s (block %v)",
				strings.Join(last.args, " "), when, why, pinnedControl(c))
			last = nil
		}
	}
	// phase names the point of the daemon's life a command is issued at.
	phase := func(p *proc) string {
		if _, err := os.Stat(control); err != nil {
			return "no pins"
		}
		if p == nil {
			return "pins, no daemon"
		}
		if _, running := daemon.Holder(daemon.LockPath(s.socket)); !running {
			return "daemon not locked yet"
		}
		if _, err := os.Stat(s.socket); err != nil {
			return "daemon locked, opening the model"
		}
		return "daemon serving"
	}
	issue := func(p *proc) string {
		t.Helper()
		check("before the next command:")
		args := commands[r.IntN(len(commands))]
		ph := phase(p)
		phases[ph]++
		var stdout, stderr strings.Builder
		err := run(context.Background(), append(append([]string(nil), args...), s.flags...), &stdout, &stderr)
		if err != nil {
			msg := err.Error()
			if msg == "" {
				t.Fatalf("'mlbpf %s' (%s) failed without saying why", strings.Join(args, " "), ph)
			}
			pinned := ph != "no pins"
			if pinned && (args[0] == "stop" || args[0] == "mode" && args[2] == "emergency") {
				// Falling back to the kernel's default is always possible.
				fail("'mlbpf %s' (%s) refused: %v", strings.Join(args, " "), ph, err)
			}
			return ph
		}
		ok[args[0]+" "+args[len(args)-1]]++
		if args[0] == "mode" && (args[2] == "collaboration" || args[2] == "recommendation") {
			c, _ := read()
			fail("'mlbpf %s' (%s) exited 0 above max_mode LEARNING: %s; the kernel has %v",
				strings.Join(args, " "), ph, strings.TrimSpace(stdout.String()), pinnedControl(c))
			return ph
		}
		last = &operatorPromise{args: args, epoch: epoch}
		check(fmt.Sprintf("(%s) on return: %s", ph, strings.TrimSpace(stdout.String())))
		// Until the next command (a varying instant), the promise holds.
		for until := time.Now().Add(time.Duration(r.IntN(30)) * time.Millisecond); time.Now().Before(until); time.Sleep(2 * time.Millisecond) {
			check("later:")
		}
		return ph
	}

	for round := range 5 {
		// With no daemon: before the first one, no pins at all.
		for range 2 {
			issue(nil)
		}
		epoch++
		p := s.launch()
		// From the first instant of its start-up until it has served a
		// dozen commands.
		for served := 0; served < 12; {
			select {
			case <-p.done:
				t.Fatalf("round %d: the daemon exited: %v\n%s", round, p.err, p.logs)
			default:
			}
			if issue(p) == "daemon serving" {
				served++
			}
		}
		epoch++
		p.signal(syscall.SIGTERM)
		if code, sig := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("round %d: the daemon's exit status after SIGTERM: %d (%v)\n%s", round, code, sig, p.logs)
		}
		check("after the daemon stopped:")
	}
	if t.Failed() {
		t.Logf("the last daemon's logs:\n%s", logs())
	}
	t.Logf("commands issued by phase: %v; exited 0: %v", phases, ok)
	for _, ph := range []string{"no pins", "pins, no daemon", "daemon serving"} {
		if phases[ph] == 0 {
			t.Errorf("no command was issued with %s", ph)
		}
	}
	if ok["mode learning"] == 0 || ok["mode emergency"] == 0 || ok["start synthetic/demo"] == 0 || ok["stop synthetic/demo"] == 0 {
		t.Errorf("some command never succeeded: %v", ok)
	}
}
