package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/console"
	"github.com/mlbpf/mlbpf/vmtest/internal/kernel"
)

// The tests here boot a kernel under qemu, which takes from a few seconds
// (KVM) to a minute or so (TCG) each, so they run only when asked to.

const bootEnv = "MLBPF_VMTEST_BOOT"

// bootKernel returns the kernel the boot tests use, fetching it if need
// be, or skips the test.
func bootKernel(t *testing.T) *kernel.Kernel {
	t.Helper()
	if os.Getenv(bootEnv) != "1" {
		t.Skipf("booting a kernel under qemu takes minutes under TCG: set %s=1 to run this test (MLBPF_VMTEST_KERNEL picks the kernel, default 6.1)", bootEnv)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("%s=1 but qemu-system-x86_64 is not installed: %v", bootEnv, err)
	}
	spec := os.Getenv("MLBPF_VMTEST_KERNEL")
	if spec == "" {
		spec = "6.1"
	}
	var log bytes.Buffer
	k, err := kernel.Resolve(t.Context(), spec, defaultCacheDir(), "", &log)
	if log.Len() > 0 {
		t.Log(strings.TrimSpace(log.String()))
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var (
	accelOnce sync.Once
	accel     string
)

func testAccel(k *kernel.Kernel) string {
	accelOnce.Do(func() {
		accel = "tcg"
		if ok, _ := kvmUsable(context.Background(), "qemu-system-x86_64", k.Image, 5*time.Second); ok {
			accel = "kvm"
		}
	})
	return accel
}

// buildFixture builds testdata/fixture, a static program that exits
// with status 3 (or hangs with fixture=hang in its environment).
func buildFixture(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fixture")
	if _, err := goCommand(t.Context(), guestEnv(), "build", "-o", out, "./testdata/fixture"); err != nil {
		t.Fatal(err)
	}
	return out
}

// bootTree boots k with tree as its initramfs and returns the verdict and
// the console output.
func bootTree(t *testing.T, k *kernel.Kernel, tree *guestTree, token, extra string, timeout time.Duration) (console.Verdict, string) {
	t.Helper()
	initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := writeInitramfs(tree, initrd, false); err != nil {
		t.Fatal(err)
	}
	m := &machine{QEMU: "qemu-system-x86_64", Machine: "pc", Accel: testAccel(k), TCG: "single", CPUs: 2, Memory: 512, Kernel: k.Image, Initrd: initrd, Append: kernelCmdline(false, extra)}
	var out lockedBuffer
	con := console.New(token, &out)
	start := time.Now()
	stop, qerr := boot(t.Context(), exec.Command(m.QEMU, m.qemuArgs()...), con, timeout, nil)
	v := con.Verdict(stop)
	t.Logf("%s boot of %s: %.1fs, verdict %+v", m.Accel, k.Release, time.Since(start).Seconds(), v.Reason)
	if qerr != "" {
		t.Logf("qemu: %s", qerr)
	}
	return v, out.String()
}

func TestBootExitStatus(t *testing.T) {
	k := bootKernel(t)
	fixture := buildFixture(t)
	initBin, err := buildInit(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mods []kernel.Module
	if k.ModulesDir != "" {
		tree, err := kernel.OpenModuleTree(k.ModulesDir)
		if err != nil {
			t.Fatal(err)
		}
		if mods, _, err = tree.Resolve([]string{"veth"}); err != nil {
			t.Fatal(err)
		}
	}
	l := &layout{
		Init:     initBin,
		Packages: []testPackage{{ImportPath: "example.com/fixture", Dir: t.TempDir(), Binary: fixture}},
		Modules:  mods,
		Token:    "0123abcd0123abcd",
		Deadline: 100,
	}
	tree, _, err := l.build()
	if err != nil {
		t.Fatal(err)
	}
	v, out := bootTree(t, k, tree, l.Token, "", 3*time.Minute)
	if v.Status != 3 || v.Reason != "" {
		t.Errorf("verdict %+v, want status 3 and no reason\n%s", v, out)
	}
	for _, want := range []string{"fixture: exiting with status 3", "FAIL\texample.com/fixture", "(exit status 3)"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	if len(mods) > 0 && !strings.Contains(out, "kernel modules loaded: veth") {
		t.Errorf("veth not loaded:\n%s", out)
	}
}

// initOnly is a guest whose init is the fixture itself.
func initOnly(fixture string) *guestTree {
	t := &guestTree{}
	t.add(guestFile{Path: "/dev", Mode: fs.ModeDir | 0o755})
	t.add(guestFile{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1})
	t.add(guestFile{Path: "/init", Mode: 0o755, Src: fixture})
	return t
}

func TestBootPanic(t *testing.T) {
	k := bootKernel(t)
	// An init that exits: the kernel panics ("Attempted to kill init").
	v, out := bootTree(t, k, initOnly(buildFixture(t)), "0123abcd0123abcd", "", 3*time.Minute)
	if v.Passed() || v.Status != 1 || !strings.Contains(v.Reason, "kernel panic: Attempted to kill init") {
		t.Errorf("verdict %+v, want a failure for the kernel panic\n%s", v, out)
	}
	if len(v.Tail) == 0 || !strings.Contains(strings.Join(v.Tail, "\n"), "fixture: exiting with status 3") {
		t.Errorf("the failure's console tail lacks the init's last words: %q", v.Tail)
	}
}

func TestBootHang(t *testing.T) {
	k := bootKernel(t)
	v, out := bootTree(t, k, initOnly(buildFixture(t)), "0123abcd0123abcd", "fixture=hang", 45*time.Second)
	if v.Passed() || !strings.Contains(v.Reason, "timed out after 45s") {
		t.Errorf("verdict %+v, want a failure for the hang\n%s", v, out)
	}
	if !strings.Contains(strings.Join(v.Tail, "\n"), "fixture: hanging") {
		t.Errorf("the failure's console tail lacks the init's output: %q", v.Tail)
	}
}

// TestRunEndToEnd runs the harness as a user would, on a package of its
// own.
func TestRunEndToEnd(t *testing.T) {
	k := bootKernel(t)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-kernel", k.Image, "-modules", k.ModulesDir, "-pkgs", "./internal/plan", "-run", "TestMarker", "-timeout", "4m"}, &stdout, &stderr)
	t.Logf("stderr:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stdout.String())
	}
	for _, want := range []string{"--- PASS: TestMarkerRoundTrip", "ok  \tgithub.com/mlbpf/mlbpf/vmtest/internal/plan", "PASS (kernel"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "TestReadWrite") {
		t.Errorf("-run TestMarker ran TestReadWrite:\n%s", stdout.String())
	}
}
