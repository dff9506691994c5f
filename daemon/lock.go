package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the daemon's lock file, beside its socket.
const LockFile = "mlbpf.lock"

// LockPath returns the lock file of the daemon whose socket is socket.
func LockPath(socket string) string { return filepath.Join(filepath.Dir(socket), LockFile) }

// ErrLocked is returned when another daemon holds the lock.
var ErrLocked = errors.New("another mlbpf daemon is running")

// Lock is the daemon's lock: an exclusive flock on its lock file, which
// holds its pid. The kernel releases it when the process dies, however
// it dies, so a stale file never blocks a restart.
type Lock struct {
	f    *os.File
	path string
}

// AcquireLock takes the daemon's lock at path, or returns an error
// wrapping ErrLocked that names the process holding it.
func AcquireLock(path string) (*Lock, error) {
	// Root's alone, as the socket beside it: created 0700 if missing.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	if err := flockProbed(f); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid, _ := readPID(path)
			who := "another process"
			if pid > 0 {
				who = fmt.Sprintf("process %d", pid)
			}
			hint := "stop it first"
			if pid > 0 {
				hint = fmt.Sprintf("stop it first (kill %d)", pid)
			}
			return nil, fmt.Errorf("%w: %s holds %s: %s, or run this one with another --socket and --pin-root", ErrLocked, who, path, hint)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// lockProbeGrace is how long AcquireLock retries a lock someone holds:
// Holder, run by every command that asks whether a daemon runs, holds it
// shared for an instant; a daemon holds it for good.
const lockProbeGrace = 250 * time.Millisecond

// flockProbed takes f's lock exclusively, without waiting for a daemon
// holding it but through another process's probe (Holder).
func flockProbed(f *os.File) error {
	deadline := time.Now().Add(lockProbeGrace)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Release releases the lock and removes the file.
func (l *Lock) Release() error {
	_ = os.Remove(l.path)
	return l.f.Close()
}

// Holder reports whether a daemon holds the lock at path, and its pid.
func Holder(path string) (pid int, running bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false
	}
	pid, _ = readPID(path)
	return pid, true
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
