package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrMissingPrivilege is returned when the process may not load BPF.
var ErrMissingPrivilege = errors.New("missing privilege")

// ErrMissingFeature is returned when the kernel or the mounts lack a
// feature a model needs.
var ErrMissingFeature = errors.New("missing kernel feature")

// CheckPrivileges returns an error wrapping ErrMissingPrivilege, saying
// what to do, unless the process can load BPF programs: CAP_SYS_ADMIN, or
// CAP_BPF with CAP_PERFMON and CAP_NET_ADMIN, in its effective set. Root
// has them on a host; root in a container may lack some, and is told
// which.
func CheckPrivileges() error {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		if os.Geteuid() == 0 {
			return nil
		}
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON) && has(unix.CAP_NET_ADMIN)) {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: mlbpf loads BPF programs and needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN): run it with sudo", ErrMissingPrivilege)
	}
	var missing []string
	for _, c := range []struct {
		cap  uint
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_PERFMON, "CAP_PERFMON"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}} {
		if !has(c.cap) {
			missing = append(missing, c.name)
		}
	}
	return fmt.Errorf("%w: mlbpf loads BPF programs and needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; this process runs as root without %s (a container that drops them?): grant them (Kubernetes: securityContext.capabilities.add, as deploy/kubernetes/daemonset.yaml does; podman: --cap-add)",
		ErrMissingPrivilege, strings.Join(missing, ", "))
}

// SeccompFiltered reports whether the process runs under a seccomp filter
// (Seccomp: 2 in /proc/self/status), as a container usually does: a
// filter may refuse bpf() whatever the capabilities.
func SeccompFiltered() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
			return strings.TrimSpace(v) == "2"
		}
	}
	return false
}

// EnsureBPFFS checks that dir (a pin root such as /sys/fs/bpf/mlbpf) lies
// on a bpf filesystem. If the bpffs mount point /sys/fs/bpf has nothing
// mounted and mount is true, it mounts bpffs there.
func EnsureBPFFS(dir string, mount bool) error {
	probe := dir
	for {
		if _, err := os.Stat(probe); err == nil {
			break
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(probe, &st); err != nil {
		return fmt.Errorf("checking bpffs at %s: %w", probe, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if mount && probe == "/sys/fs/bpf" {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("%w: mounting bpffs on /sys/fs/bpf: %v (mount it yourself: mount -t bpf bpf /sys/fs/bpf)", ErrMissingFeature, err)
		}
		return nil
	}
	if probe == "/sys/fs/bpf" || strings.HasPrefix(probe, "/sys/fs/bpf/") {
		return fmt.Errorf("%w: %s is not on a bpf filesystem: mount it with 'mount -t bpf bpf /sys/fs/bpf'", ErrMissingFeature, probe)
	}
	return fmt.Errorf("%w: %s is not on a bpf filesystem: pin under /sys/fs/bpf, or mount one there: mkdir -p %s && mount -t bpf bpf %s", ErrMissingFeature, dir, dir, dir)
}

// Cgroup2Root returns the mount point of the cgroup v2 hierarchy
// (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid
// ones), or an error saying how to mount it.
func Cgroup2Root() (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading mountinfo: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		// ... mountpoint ... - fstype source options
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if f := strings.Fields(post); len(f) > 0 && f[0] == "cgroup2" {
			if g := strings.Fields(pre); len(g) >= 5 {
				return g[4], nil
			}
		}
	}
	return "", fmt.Errorf("%w: no cgroup v2 hierarchy is mounted: mount -t cgroup2 none /sys/fs/cgroup/unified (or /sys/fs/cgroup)", ErrMissingFeature)
}

// explain turns the kernel's terse answers into errors saying what to do.
func explain(err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %w (this kernel lacks a BPF feature mlbpf needs; see the README's kernel table)", ErrMissingFeature, err)
	case errors.Is(err, unix.EPERM):
		if perr := CheckPrivileges(); perr != nil {
			return perr
		}
		return fmt.Errorf("%w: %w (the kernel refused; is it locked down, or is kernel.unprivileged_bpf_disabled set?)", ErrMissingPrivilege, err)
	}
	return err
}

// Tracefs is where tracefs is mounted on current kernels.
const Tracefs = "/sys/kernel/tracing"

// EnsureTracefs checks that tracefs is mounted (at /sys/kernel/tracing or
// under debugfs), which attaching to a tracepoint by name needs. If it is
// not and mount is true, it mounts tracefs at /sys/kernel/tracing.
func EnsureTracefs(mount bool) error {
	for _, dir := range []string{Tracefs, "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return nil
		}
	}
	if mount {
		if err := unix.Mount("tracefs", Tracefs, "tracefs", 0, ""); err != nil {
			return fmt.Errorf("%w: mounting tracefs on %s: %v (mount it yourself: mount -t tracefs tracefs %s)", ErrMissingFeature, Tracefs, err, Tracefs)
		}
		return nil
	}
	return fmt.Errorf("%w: tracefs is not mounted: mount -t tracefs tracefs %s", ErrMissingFeature, Tracefs)
}
