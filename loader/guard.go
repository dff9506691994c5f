package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/model"
)

// A control block has more than one writer: the daemon, which renews the
// lease and changes the mode as the evidence says, and the operator, whose
// 'mlbpf mode', 'start' and 'stop' write the pinned block directly, daemon
// or not. Two rules keep them from undoing each other:
//
//   - Every writer holds an exclusive flock on the model's pin directory
//     while it reads, changes and writes the block (LockDir,
//     UpdateControl; a guarded ControlMap does it on every store), so no
//     write lands between another writer's read and write.
//   - The daemon guards its ControlMap (SetGuard): before each store its
//     ControlGuard sees the block in the kernel, and when someone else
//     wrote it, holds the daemon's write back until the daemon has
//     adopted the operator's change. See package daemon for the policy.

// DirLock is an exclusive flock on a directory, a model's pin directory
// on bpffs for example. It implements sync.Locker.
type DirLock struct {
	f *os.File
}

// LockDir opens dir for locking; it does not lock yet.
func LockDir(dir string) (*DirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s for locking: %w", dir, err)
	}
	return &DirLock{f: f}, nil
}

// Lock takes the lock, waiting for another holder to let go.
func (l *DirLock) Lock() {
	for {
		err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return // an error other than EINTR cannot happen on an open fd
		}
	}
}

// Unlock releases the lock.
func (l *DirLock) Unlock() { _ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN) }

// Close releases the directory (and the lock, if held).
func (l *DirLock) Close() error { return l.f.Close() }

// ControlGuard arbitrates between a daemon's writes to a control block and
// other writers. A guarded ControlMap calls Admit before every store, with
// the block in the kernel, and Stored after a store that succeeded; both
// under the ControlMap's lock.
type ControlGuard interface {
	// Admit reports whether next may overwrite kernel. When it returns
	// false, StoreControl writes nothing and returns nil: the guard has
	// taken note and its owner will reconcile.
	Admit(kernel, next model.Control) bool
	// Stored reports a block written.
	Stored(c model.Control)
}

// SetGuard makes every StoreControl take lock (may be nil), read the block
// in the kernel, ask g whether to write, write, and tell g; a nil g
// removes the guard.
func (c *ControlMap) SetGuard(lock sync.Locker, g ControlGuard) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lock, c.guard = lock, g
}

// UpdateControl changes the control block pinned in dir under the pin
// directory's lock: it reads the block, lets fn change it, bumps the
// generation when anything changed, and writes it. It returns the block
// before and after. This is how an operator's command writes when no
// daemon runs.
func UpdateControl(dir string, fn func(*model.Control) error) (before, after model.Control, err error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "control"), nil)
	if err != nil {
		return before, after, fmt.Errorf("opening the control block: %w", err)
	}
	defer m.Close()
	cm, err := NewControlMap(m)
	if err != nil {
		return before, after, err
	}
	l, err := LockDir(dir)
	if err != nil {
		return before, after, err
	}
	defer l.Close()
	l.Lock()
	defer l.Unlock()
	return cm.update(fn)
}

// Update changes the block as UpdateControl does, as a writer other than
// the guard's owner: under the lock SetGuard gave, without asking the
// guard, which then finds the block is not the one its owner wrote. This
// is how a daemon writes an operator's command, to adopt it as it adopts
// any other writer's.
func (c *ControlMap) Update(fn func(*model.Control) error) (before, after model.Control, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lock != nil {
		c.lock.Lock()
		defer c.lock.Unlock()
	}
	return c.update(fn)
}

func (c *ControlMap) update(fn func(*model.Control) error) (before, after model.Control, err error) {
	if before, err = c.LoadControl(); err != nil {
		return before, after, err
	}
	after = before
	if err := fn(&after); err != nil {
		return before, before, err
	}
	if after == before {
		return before, after, nil
	}
	if after.Generation == before.Generation {
		after.Generation++
		if after.Generation == 0 {
			after.Generation = 1
		}
	}
	if err := c.write(after); err != nil {
		return before, before, err
	}
	return before, after, nil
}
