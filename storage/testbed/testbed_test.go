package testbed

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

func newTestbed(t *testing.T, cfg Config) *Testbed {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root for loop devices, mounts and cgroups; run the tests with sudo")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testutil.Missing(t, "needs the loop driver (/dev/loop-control): modprobe loop")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testutil.Missing(t, "needs mkfs.ext4: apt-get install e2fsprogs")
	}
	if !cfg.Disk.IsZero() {
		requireFUSE(t)
	}
	tb, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
		assertGone(t, tb)
	})
	return tb
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if err := EnsureFUSE(); err != nil {
		testutil.Missing(t, err.Error())
	}
}

// assertGone fails t if anything of tb is left on the host.
func assertGone(t *testing.T, tb *Testbed) {
	t.Helper()
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), tb.dir) {
		t.Errorf("a mount under %s is left", tb.dir)
	}
	if _, err := os.Stat(tb.dir); err == nil {
		t.Errorf("directory %s is left", tb.dir)
	}
	if b, err := os.ReadFile(filepath.Join("/sys/block", tb.Name, "loop", "backing_file")); err == nil && strings.Contains(string(b), tb.dir) {
		t.Errorf("loop device %s is still attached to %s", tb.Device, strings.TrimSpace(string(b)))
	}
	if tb.cg != nil {
		if _, err := os.Stat(tb.cg.path); err == nil {
			t.Errorf("cgroup %s is left", tb.cg.path)
		}
	}
}

func resident(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+pageSize-1)/pageSize)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestDropCacheEmptiesTheDevice(t *testing.T) {
	tb := newTestbed(t, Config{SizeMiB: 96, FileMiB: 8})
	path := filepath.Join(tb.Mount, seqFile)
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path); n < 8<<20/pageSize {
		t.Fatalf("after reading the file %d pages are resident, want all %d", n, 8<<20/pageSize)
	}
	if err := tb.DropCache(); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path); n != 0 {
		t.Errorf("after DropCache %d pages are resident, want 0", n)
	}
}

func TestThrottleCapsReads(t *testing.T) {
	tb := newTestbed(t, Config{SizeMiB: 96, FileMiB: 32, Throttle: Throttle{ReadIOPS: 50}})
	if err := os.WriteFile(tb.ReadAheadPath(), []byte("128"), 0); err != nil {
		t.Fatal(err)
	}
	st, err := tb.Run(context.Background(), Seq, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 50 requests/s of at most 128 KiB each, plus one slice's burst.
	limit := int64(3 * 50 * 128 << 10)
	t.Logf("%s via %s: %d bytes in %v (%.1f MB/s)", tb.Device, tb.IOController(), st.Bytes, st.Elapsed, st.MBps())
	if st.Bytes > limit {
		t.Errorf("read %d bytes in 2 s at 50 IOPS x 128 KiB: the throttle is not in effect (limit %d)", st.Bytes, limit)
	}
	if st.Bytes == 0 {
		t.Error("the workload read nothing")
	}
	// The rule names this device in the testbed's cgroup.
	file := "blkio.throttle.read_iops_device"
	if tb.cg.v2 {
		file = "io.max"
	}
	b, err := os.ReadFile(filepath.Join(tb.cg.path, file))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), strconv.Itoa(int(tb.Major))+":"+strconv.Itoa(int(tb.Minor))) {
		t.Errorf("%s does not name %d:%d: %q", file, tb.Major, tb.Minor, b)
	}
}

func TestWorkloadsRun(t *testing.T) {
	tb := newTestbed(t, Config{SizeMiB: 96, FileMiB: 8})
	old := PhaseLength
	PhaseLength = 300 * time.Millisecond
	t.Cleanup(func() { PhaseLength = old })
	for _, w := range Workloads {
		st, err := tb.Run(context.Background(), w, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Bytes == 0 || st.Ops == 0 {
			t.Errorf("%s: %+v, want some reads", w, st)
		}
	}
}

// TestKilledTestbedIsCleaned kills a process that built a testbed and
// checks that the next testbed's clean-up removes all it left.
func TestKilledTestbedIsCleaned(t *testing.T) {
	if os.Getenv("MLBPF_TESTBED_CHILD") != "" {
		tb, err := New(context.Background(), Config{SizeMiB: 64, FileMiB: 4, Disk: Disk{Request: time.Millisecond}})
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString("ready " + tb.dir + " " + tb.Name + " " + tb.cg.path + "\n")
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	newTestbed(t, Config{SizeMiB: 64, FileMiB: 4}) // skips without root
	requireFUSE(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledTestbedIsCleaned$")
	cmd.Env = append(os.Environ(), "MLBPF_TESTBED_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child testbed: %v", err)
	}
	fields := strings.Fields(line)
	if len(fields) != 4 || fields[0] != "ready" {
		t.Fatalf("child said %q", line)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	dead := &Testbed{dir: fields[1], Name: fields[2], cg: &cgroup{path: fields[3]}}
	if _, err := os.Stat(dead.cg.path); err != nil {
		t.Fatalf("the killed child's cgroup should still exist before clean-up: %v", err)
	}
	CleanStale()
	time.Sleep(100 * time.Millisecond) // autoclear runs once the last user is gone
	assertGone(t, dead)
}

// TestDiskCostIsAdditive reads the device directly (O_DIRECT: every read
// is one request of the loop device, one read of the disk server) at
// offsets that do not follow each other: each read must take at least
// request + seek + bytes/BPS, the sum, where the io controller's throttle
// would charge the largest of them only.
func TestDiskCostIsAdditive(t *testing.T) {
	d := Disk{Request: 10 * time.Millisecond, Seek: 10 * time.Millisecond, BPS: 1 << 20}
	tb := newTestbed(t, Config{SizeMiB: 64, FileMiB: 4, Disk: d})
	b, err := os.ReadFile(filepath.Join("/sys/block", tb.Name, "loop", "backing_file"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(b)), "/disk/"+diskImage) {
		t.Fatalf("the loop device's backing file is %q, want the disk server's image", b)
	}
	f, err := os.OpenFile(tb.Device, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size, reads = 64 << 10, 4
	buf, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned for O_DIRECT
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	start := time.Now()
	for i := range reads {
		if _, err := f.ReadAt(buf, int64(i)*(8<<20)+4096); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	want := time.Duration(reads) * d.cost(size, true)
	t.Logf("%d reads of %d KiB: %v, the disk's cost %v (the largest part alone: %v)", reads, size>>10, el, want, time.Duration(reads)*time.Duration(float64(size)/float64(d.BPS)*float64(time.Second)))
	if el < want {
		t.Errorf("%d reads took %v, less than their cost %v: the disk does not charge request + seek + transfer", reads, el, want)
	}
}
