package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
)

// Tests that need the daemon in a process of its own (to kill it, to see
// its capabilities, to run it as another user) run an mlbpf built without
// cgo (see loader.DropCapabilities): this test binary itself where it was
// built so (vmtest's guests, which have no Go toolchain, run such test
// binaries), else one built here once with go build.
var builtBinary struct {
	once      sync.Once
	dir, path string
	env       []string // what the binary's environment needs
	err       error
}

// asMlbpf in the environment makes the test binary run mlbpf's main
// instead of the tests (see TestMain).
const asMlbpf = "MLBPF_TEST_AS_MLBPF"

// mlbpfBinary returns the path of an mlbpf binary built without cgo, in a
// directory every user may read (TestPrivilegeBoundaries runs it as
// nobody). TestMain removes it. Run it with mlbpfCommand.
func mlbpfBinary(t *testing.T) string {
	t.Helper()
	builtBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "mlbpf-bin-")
		if err != nil {
			builtBinary.err = err
			return
		}
		builtBinary.dir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			builtBinary.err = err
			return
		}
		path := filepath.Join(dir, "mlbpf")
		if !testBinaryHasCgo {
			self, err := os.Executable()
			if err == nil {
				err = copyFile(self, path, 0o755)
			}
			builtBinary.path, builtBinary.env, builtBinary.err = path, []string{asMlbpf + "=1"}, err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goTool, "build", "-o", path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			builtBinary.err = fmt.Errorf("building mlbpf without cgo (or run these tests built with CGO_ENABLED=0): %v\n%s", err, out)
			return
		}
		builtBinary.path = path
	})
	if builtBinary.err != nil {
		t.Fatal(builtBinary.err)
	}
	return builtBinary.path
}

// mlbpfCommand returns the command running mlbpf with args.
func mlbpfCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(mlbpfBinary(t), args...)
	cmd.Env = append(os.Environ(), builtBinary.env...)
	return cmd
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

func removeBinary() {
	if builtBinary.dir != "" {
		_ = os.RemoveAll(builtBinary.dir)
	}
}

// proc is a daemon run by the built binary.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error // once done
}

// spawn runs 'mlbpf run' of the session in a process of its own and waits
// until its synthetic/demo runs.
func (s *session) spawn(extra ...string) *proc {
	s.t.Helper()
	p := s.launch(extra...)
	s.waitFor("the daemon process to run synthetic/demo", func() bool {
		select {
		case <-p.done:
			s.t.Fatalf("the daemon exited: %v\n%s", p.err, p.logs)
		default:
		}
		// Its own evidence: between taking the lock and writing its pid
		// in the lock file a daemon counts as running with an unknown
		// pid, and a killed daemon's evidence would then pass for live.
		st, err := s.status()
		return err == nil && len(st) == 1 && st[0].State == "RUNNING" && st[0].Live && st[0].Daemon.PID == p.pid()
	})
	return p
}

// launch runs 'mlbpf run' of the session in a process of its own, without
// waiting for anything.
func (s *session) launch(extra ...string) *proc {
	s.t.Helper()
	p := &proc{t: s.t, logs: &syncBuffer{}, done: make(chan struct{})}
	args := append(append([]string{"run", "--log-level", "debug"}, s.flags...), extra...)
	p.cmd = mlbpfCommand(s.t, args...)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	s.logs = p.logs
	s.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the process to end and returns its exit status, or the
// signal that killed it.
func (p *proc) wait(d time.Duration) (code int, sig syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("the daemon did not exit within %v\n%s", d, p.logs)
	}
	return exitStatus(p.t, p.err)
}

func exitStatus(t *testing.T, err error) (code int, sig syscall.Signal) {
	t.Helper()
	if err == nil {
		return 0, 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, ws.Signal()
	}
	return ee.ExitCode(), 0
}

// pinned reads synthetic/demo's pins.
func (s *session) pinned() loader.PinnedModel {
	s.t.Helper()
	pm, err := loader.ReadPinned(s.root, "synthetic", "demo")
	if err != nil {
		s.t.Fatal(err)
	}
	return pm
}

// lightLoad starts a shell making a few hundred system calls a second
// and returns its pid: little enough that a ring of 1 MiB holds what it
// makes in several seconds.
func lightLoad(t *testing.T) int {
	t.Helper()
	return testutil.Process(t, "sh", "-c", "while :; do sleep 0.02; done")
}

// flood starts a process making system calls as fast as it can (dd
// copying one byte at a time, two calls a byte: a million or more a
// second) and returns its pid.
func flood(t *testing.T) int {
	t.Helper()
	return testutil.Process(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=1")
}
