// Package testutil holds the checks mlbpf's tests share: whether the
// process may load BPF, whether the kernel has a feature, each skipping
// with a message that names exactly what is missing.
package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// RequireBPF skips t unless the process can load BPF programs and bpffs is
// mounted at /sys/fs/bpf. On CI (MLBPF_CI=1) a missing privilege is a
// failure, not a skip: CI runs as root on a kernel with the features.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "needs root to load BPF programs (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); run the tests with sudo")
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		Missing(tb, "needs bpffs at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf")
		return
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		tb.Fatalf("raising RLIMIT_MEMLOCK: %v", err)
	}
	logRootSockOps(tb)
}

// Missing skips t because something it needs is missing, saying what and
// how to get it; on CI (MLBPF_CI=1), which has everything, it fails t.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("MLBPF_CI") != "" {
		tb.Fatal(why)
	}
	tb.Skip(why)
}

// SkipIfNotSupported skips t if err says the kernel lacks a feature, naming
// it, through Missing: on CI, whose kernel has every feature, it fails.
// Other errors fail the test.
func SkipIfNotSupported(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		Missing(tb, fmt.Sprintf("kernel lacks %s: %v", what, err))
		return
	}
	tb.Fatalf("%s: %v", what, err)
}

// NotPackaged skips t because it needs name, which the distribution CI
// runs on does not package, so CI cannot have it either: unlike Missing,
// it skips under MLBPF_CI=1 too. how says how to get it.
func NotPackaged(tb testing.TB, name, how string) {
	tb.Helper()
	tb.Skipf("needs %s, which Debian does not package (so CI does not run this test): %s", name, how)
}

// PinRoot returns a fresh pin root on bpffs for one test, removed when the
// test ends.
func PinRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/sys/fs/bpf", "mlbpf-test-")
	if err != nil {
		tb.Fatalf("creating pin root: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Clean(dir)
}

// OpenFDs counts the process's open file descriptors (to find leaks).
func OpenFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// PinnedMapID returns the id of the map pinned at path.
func PinnedMapID(tb testing.TB, path string) ebpf.MapID {
	tb.Helper()
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		tb.Fatalf("opening the pinned map: %v", err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		tb.Fatalf("reading the pinned map's info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		tb.Fatal("the kernel does not report map ids")
	}
	return id
}

// LinksUsingMap counts the BPF links attached in the kernel whose program
// uses the map with the given id: how many times a model's applier is
// attached, whoever holds the links (a process, a pin, or both).
func LinksUsingMap(tb testing.TB, id ebpf.MapID) int {
	tb.Helper()
	var it link.Iterator
	defer it.Close()
	n := 0
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // detached meanwhile
		}
		prog, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			continue
		}
		pi, err := prog.Info()
		prog.Close()
		if err != nil {
			continue
		}
		ids, _ := pi.MapIDs()
		for _, m := range ids {
			if m == id {
				n++
				break
			}
		}
	}
	if err := it.Err(); err != nil {
		tb.Fatalf("listing links: %v", err)
	}
	return n
}

// SyscallLoad starts a process that makes system calls steadily and
// cheaply (a shell sleeping 5 ms in a loop), for a live hook filtered on
// its pid to see; it is killed when the test ends. It returns the pid.
func SyscallLoad(tb testing.TB) int {
	tb.Helper()
	return Process(tb, "sh", "-c", "while :; do sleep 0.005; done")
}

// Process starts name with args, kills it when the test ends, and returns
// its pid.
func Process(tb testing.TB, name string, args ...string) int {
	tb.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", name, err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// SyncBuffer is a bytes.Buffer that goroutines (a daemon's logger) may
// write while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// RequireCongestionControl skips tb (fails it on CI) unless the kernel
// offers every one of names now (net.ipv4.tcp_available_congestion_control,
// the list tcp.Available reads: this package cannot import tcp, whose
// dependencies' tests import it).
func RequireCongestionControl(tb testing.TB, names ...string) {
	tb.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		tb.Fatalf("reading available congestion controls: %v", err)
	}
	avail := strings.Fields(string(b))
	for _, cc := range names {
		if !slices.Contains(avail, cc) {
			Missing(tb, "kernel lacks the "+cc+" congestion control (modprobe tcp_"+cc+")")
		}
	}
}
