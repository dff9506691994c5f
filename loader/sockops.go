package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// AttachSockOps attaches a sock_ops program to a cgroup v2 directory and
// pins the link at pin, or adopts the link pinned there for the same
// cgroup by an earlier run (updating it to prog). A link pinned there for
// another cgroup is replaced.
func AttachSockOps(cgroup, pin string, prog *ebpf.Program) (link.Link, error) {
	var st unix.Stat_t
	if err := unix.Stat(cgroup, &st); err != nil {
		return nil, fmt.Errorf("reading cgroup %s: %w", cgroup, err)
	}
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if c := info.Cgroup(); ierr == nil && c != nil && c.CgroupId == st.Ino {
			if err := l.Update(prog); err != nil {
				l.Close()
				return nil, fmt.Errorf("updating the pinned sock_ops link %s: %w", pin, err)
			}
			return l, nil
		}
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attaching sock_ops to cgroup %s: %w (is it a cgroup v2 directory?)", cgroup, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pinning the sock_ops link: %w", err)
	}
	return l, nil
}

// DetachPinned detaches the link pinned at pin (held as l if not nil) and
// removes the pin. A missing pin is not an error.
func DetachPinned(l link.Link, pin string) error {
	if l == nil {
		var err error
		l, err = link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("detaching %s: %w", pin, err)
		}
	}
	if err := errors.Join(l.Unpin(), l.Close()); err != nil {
		return fmt.Errorf("detaching %s: %w", pin, err)
	}
	return nil
}
