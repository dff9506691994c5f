package testutil

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// RootSockOps lists the sock_ops programs attached to the root of the
// cgroup v2 hierarchy, as "id name": every socket of the host, a test's
// too, passes through them. An older mlbpf's (pins 'mlbpf run' left, a
// stopped tcp/cc among them) acts on a test's sockets as that build did.
func RootSockOps() ([]string, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	dir, err := os.Open(root)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(dir.Fd()), Attach: ebpf.AttachCGroupSockOps})
	if err != nil {
		return nil, fmt.Errorf("querying the sock_ops programs of %s: %w", root, err)
	}
	var out []string
	for _, p := range res.Programs {
		name := "?"
		if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
			if info, err := prog.Info(); err == nil {
				name = info.Name
			}
			prog.Close()
		}
		out = append(out, fmt.Sprintf("%d %s", p.ID, name))
	}
	return out, nil
}

// cgroup2Root is where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 2 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/mounts")
}

// logRootSockOps says, in tb's log (shown when it fails, or with -v),
// which sock_ops programs on the cgroup v2 root see its sockets.
func logRootSockOps(tb testing.TB) {
	tb.Helper()
	progs, err := RootSockOps()
	if err != nil || len(progs) == 0 {
		return
	}
	tb.Logf("sock_ops programs on the cgroup v2 root see this test's sockets too: %s (an older mlbpf's? go run ./cmd/mlbpf rollback removes its pins)",
		strings.Join(progs, ", "))
}
