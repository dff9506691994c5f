package loader

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capabilities are the capability sets of a thread, as bit masks
// (1 << unix.CAP_BPF, ...), read from /proc/<pid>/task/<tid>/status.
type Capabilities struct {
	Effective, Permitted, Inheritable, Bounding, Ambient uint64
}

// Empty reports whether the thread holds no capability in any set.
func (c Capabilities) Empty() bool {
	return c.Effective|c.Permitted|c.Inheritable|c.Bounding|c.Ambient == 0
}

func (c Capabilities) String() string {
	return fmt.Sprintf("CapEff=%016x CapPrm=%016x CapInh=%016x CapBnd=%016x CapAmb=%016x",
		c.Effective, c.Permitted, c.Inheritable, c.Bounding, c.Ambient)
}

// ThreadCapabilities returns the capabilities of every thread of process
// pid (0: this process), by thread id. Capabilities belong to threads,
// not processes, so a process has dropped one only when every thread has.
func ThreadCapabilities(pid int) (map[int]Capabilities, error) {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	out := make(map[int]Capabilities, len(tasks))
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("reading capabilities: %w", err)
		}
		c, err := parseCapabilities(string(b))
		if err != nil {
			return nil, fmt.Errorf("reading capabilities of thread %d: %w", tid, err)
		}
		out[tid] = c
	}
	return out, nil
}

func parseCapabilities(status string) (Capabilities, error) {
	var c Capabilities
	fields := map[string]*uint64{
		"CapEff": &c.Effective, "CapPrm": &c.Permitted, "CapInh": &c.Inheritable,
		"CapBnd": &c.Bounding, "CapAmb": &c.Ambient,
	}
	seen := 0
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		p := fields[k]
		if !ok || p == nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return c, fmt.Errorf("%s: %w", k, err)
		}
		*p = n
		seen++
	}
	if seen < 4 { // CapAmb is missing before Linux 4.3
		return c, errors.New("no capability sets in the status file")
	}
	return c, nil
}

// ErrCapabilitiesKept is returned by DropCapabilities when it cannot
// change every thread of the process: the process keeps its
// capabilities.
var ErrCapabilitiesKept = errors.New("capabilities kept")

// DropCapabilities removes from every thread of the process each
// capability not in keep: from the bounding set first (no execve can
// give it back), then from the ambient, inheritable, permitted and
// effective sets. It also sets no_new_privs. It is for a daemon that has
// done what needed privileges (load, pin, attach) and from then on only
// uses the file descriptors it holds.
//
// Capabilities belong to threads, and a Go program runs on threads of its
// own choosing, so every thread must drop them: this uses
// syscall.AllThreadsSyscall, which Go offers only to programs built
// without cgo. A program built with cgo gets an error wrapping
// ErrCapabilitiesKept, and keeps every capability: build it with
// CGO_ENABLED=0.
func DropCapabilities(keep ...uintptr) error {
	var keepMask uint64
	for _, c := range keep {
		keepMask |= 1 << c
	}
	last := uintptr(unix.CAP_LAST_CAP)
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			last = uintptr(n)
		}
	}
	allThreads := func(what string, trap, a1, a2, a3 uintptr) error {
		if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
			if e == syscall.ENOTSUP {
				return fmt.Errorf("%w: %s on every thread: this binary is built with cgo, which leaves Go no way to change all its threads (build mlbpf with CGO_ENABLED=0)", ErrCapabilitiesKept, what)
			}
			return fmt.Errorf("%w: %s: %w", ErrCapabilitiesKept, what, e)
		}
		return nil
	}
	// no_new_privs first: it needs no privilege, and whoever sees the
	// capabilities gone then sees it set too.
	if err := allThreads("setting no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return err
	}
	// The bounding set needs CAP_SETPCAP in the effective set: drop from
	// it while we still have it.
	for c := uintptr(0); c <= last; c++ {
		if keepMask&(1<<c) != 0 {
			continue
		}
		if err := allThreads("dropping "+capName(c)+" from the bounding set", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); err != nil {
			return err
		}
	}
	if err := allThreads("clearing the ambient set", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil &&
		!errors.Is(err, syscall.EINVAL) { // no ambient capabilities before Linux 4.3
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	data[0].Effective, data[1].Effective = uint32(keepMask), uint32(keepMask>>32)
	data[0].Permitted, data[1].Permitted = uint32(keepMask), uint32(keepMask>>32)
	if err := allThreads("setting the capability sets", unix.SYS_CAPSET,
		uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); err != nil {
		return err
	}
	return nil
}

// KeepAfterAttach is what a daemon needs to keep once its programs are
// attached, on this kernel: nothing since Linux 5.19, where updating and
// reading maps, attaching a loaded program (after an operator's start)
// and pinning need only the file descriptors and the pin directory's
// permissions; CAP_BPF before it, where kernel.unprivileged_bpf_disabled
// refuses every bpf() command without it.
func KeepAfterAttach() []uintptr {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		rel := unix.ByteSliceToString(u.Release[:])
		var major, minor int
		if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err == nil && (major > 5 || major == 5 && minor >= 19) {
			return nil
		}
	}
	return []uintptr{unix.CAP_BPF}
}

func capName(c uintptr) string {
	switch c {
	case unix.CAP_SYS_ADMIN:
		return "CAP_SYS_ADMIN"
	case unix.CAP_BPF:
		return "CAP_BPF"
	case unix.CAP_PERFMON:
		return "CAP_PERFMON"
	case unix.CAP_NET_ADMIN:
		return "CAP_NET_ADMIN"
	case unix.CAP_SETPCAP:
		return "CAP_SETPCAP"
	}
	return "capability " + strconv.Itoa(int(c))
}
