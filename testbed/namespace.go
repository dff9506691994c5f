package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// Namespace is one of the testbed's named network namespaces.
type Namespace struct {
	name   string
	handle netns.NsHandle
}

// newNamespace creates a named network namespace (visible to `ip netns`)
// without moving the calling goroutine's thread into it for longer than
// the call.
func newNamespace(name string) (*Namespace, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("creating netns %s: reading the current netns: %w", name, err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		// NewNamed may have switched the thread before failing.
		if serr := netns.Set(orig); serr != nil {
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		}
		return nil, fmt.Errorf("creating netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread()
		h.Close()
		_ = netns.DeleteNamed(name)
		return nil, fmt.Errorf("creating netns %s: returning to the original netns: %w", name, err)
	}
	return &Namespace{name: name, handle: h}, nil
}

// Name is the namespace's name, as `ip netns list` shows it.
func (n *Namespace) Name() string { return n.name }

// Path is the namespace's bind mount, for `nsenter --net=PATH`.
func (n *Namespace) Path() string { return filepath.Join("/run/netns", n.name) }

// Do runs fn on an OS thread that is in the namespace for the duration of
// the call. Sockets fn creates belong to the namespace; processes it
// starts are born in it.
func (n *Namespace) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering netns %s: %w", n.name, err)
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering netns %s: %w", n.name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime then ends it with this
		// goroutine instead of reusing it in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leaving netns %s: %w", n.name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Dial connects from the namespace. The socket is created inside the
// namespace; the rest of the connection's life needs no special thread.
func (n *Namespace) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return n.DialWith(ctx, &net.Dialer{}, network, address)
}

// DialWith is Dial with a caller's dialer (its Control function, for
// example, can set socket options before connect).
func (n *Namespace) DialWith(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// Start starts cmd inside the namespace: the child is forked from a thread
// that is in the namespace.
func (n *Namespace) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Sysctl writes a sysctl of the namespace, given with dots
// ("net.ipv4.tcp_congestion_control").
func (n *Namespace) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("setting %s=%s in netns %s: %w", key, value, n.name, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl of the namespace.
func (n *Namespace) ReadSysctl(key string) (string, error) {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s in netns %s: %w", key, n.name, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

func (n *Namespace) close() error {
	var errs []error
	if n.handle.IsOpen() {
		errs = append(errs, n.handle.Close())
	}
	if err := netns.DeleteNamed(n.name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("deleting netns %s: %w", n.name, err))
	}
	return errors.Join(errs...)
}
