package ringbuf_test

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// A read is pending when a thread of this process is blocked in
// epoll_wait on the Reader's epoll fd. The tests of what reaches a pending
// read (SetDeadline, Flush) wait for that, so that they cannot pass by
// starting the read too late.

// epollWaits are the system calls a blocked epoll wait shows in
// /proc/<tid>/syscall, by architecture.
var epollWaits = map[string][]int{
	"amd64": {232, 281, 441}, // epoll_wait, epoll_pwait, epoll_pwait2
	"arm64": {22, 441},       // epoll_pwait, epoll_pwait2
}

// watchedReader returns a Reader on m and its epoll fd, the one eventpoll
// fd NewReader opened.
func watchedReader(t *testing.T, m *ebpf.Map) (*ringbuf.Reader, int) {
	t.Helper()
	if _, ok := epollWaits[runtime.GOARCH]; !ok {
		testutil.Missing(t, "knows the epoll_wait system call numbers of amd64 and arm64 only, not "+runtime.GOARCH)
	}
	before := eventpollFDs(t)
	r := newReader(t, m)
	var fds []int
	for fd := range eventpollFDs(t) {
		if !before[fd] {
			fds = append(fds, fd)
		}
	}
	if len(fds) != 1 {
		t.Fatalf("NewReader opened eventpoll fds %v, want exactly one", fds)
	}
	return r, fds[0]
}

func eventpollFDs(t *testing.T) map[int]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testutil.Missing(t, "needs /proc/self/fd: mount -t proc proc /proc")
	}
	fds := map[int]bool{}
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "anon_inode:[eventpoll]" {
			fd, _ := strconv.Atoi(e.Name())
			fds[fd] = true
		}
	}
	return fds
}

// blockedIn reports whether a thread of this process is blocked in an
// epoll wait on epfd.
func blockedIn(t *testing.T, epfd int) bool {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		testutil.Missing(t, "needs /proc/self/task: mount -t proc proc /proc")
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue // "running"
		}
		nr, err1 := strconv.Atoi(f[0])
		fd, err2 := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
		if err1 != nil || err2 != nil || int(fd) != epfd {
			continue
		}
		for _, w := range epollWaits[runtime.GOARCH] {
			if nr == w {
				return true
			}
		}
	}
	return false
}

// waitPending waits until a read is pending on the reader with epoll fd
// epfd.
func waitPending(t *testing.T, epfd int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if blockedIn(t, epfd) {
			return
		}
	}
	t.Fatal("the read never blocked in epoll_wait on the reader's epoll fd")
}
