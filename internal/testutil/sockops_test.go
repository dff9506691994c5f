package testutil

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// logRecorder is a testing.TB that keeps what is logged.
type logRecorder struct {
	testing.TB
	logs []string
}

func (r *logRecorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

// TestRootSockOps attaches a sock_ops program that does nothing (returns
// 1, as the kernel's default would) to the cgroup v2 root, and expects it
// listed and logged, then gone once detached.
func TestRootSockOps(t *testing.T) {
	RequireBPF(t)
	root, err := cgroup2Root()
	if err != nil {
		Missing(t, "needs cgroup v2 mounted: "+err.Error())
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "mlbpf_noop", Type: ebpf.SockOps, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("this kernel does not report program ids")
	}
	want := fmt.Sprintf("%d mlbpf_noop", id)
	l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	progs, err := RootSockOps()
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	r := &logRecorder{TB: t}
	logRootSockOps(r)
	l.Close()
	if !slices.Contains(progs, want) {
		t.Fatalf("RootSockOps() = %q, want %q among them", progs, want)
	}
	if len(r.logs) != 1 || !strings.Contains(r.logs[0], want) {
		t.Fatalf("logged %q, want one line naming %q", r.logs, want)
	}
	after, err := RootSockOps()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(after, want) {
		t.Fatalf("RootSockOps() = %q after the detach, still with %q", after, want)
	}
}
