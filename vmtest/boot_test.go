package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The tests here boot a kernel with vng, which takes from a few seconds
// (KVM) to half a minute or so (TCG) each, so they run only when asked to.

const bootEnv = "MLBPF_VMTEST_BOOT"

// runBoot runs the harness on the fixture package (or pkgs) with args,
// and returns its error, standard output and standard error.
func runBoot(t *testing.T, pkgs string, args ...string) (error, string, string) {
	t.Helper()
	if os.Getenv(bootEnv) != "1" {
		t.Skipf("booting a kernel takes half a minute under TCG: set %s=1 to run this test (MLBPF_VMTEST_KERNEL picks the kernel, default 6.1)", bootEnv)
	}
	kernel := os.Getenv("MLBPF_VMTEST_KERNEL")
	if kernel == "" {
		kernel = "6.1"
	}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"-kernel", kernel, "-pkgs", pkgs}, args...), &stdout, &stderr)
	t.Logf("error %v; stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	return err, stdout.String(), stderr.String()
}

func contains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func TestBootPass(t *testing.T) {
	err, out, log := runBoot(t, "./internal/kernel", "-run", "TestControlFields")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	contains(t, "the output", out, "vmtest: guest kernel ", "--- PASS: TestControlFields",
		"ok  \tgithub.com/mlbpf/mlbpf/vmtest/internal/kernel", "PASS (kernel ")
	contains(t, "the log", log, "virtme-ng ")
	if strings.Contains(out, "TestResolvePath") {
		t.Error("-run TestControlFields ran TestResolvePath")
	}
}

func TestBootExitStatus(t *testing.T) {
	err, out, _ := runBoot(t, "./testdata/fixture", "--", "-fixture=exit3")
	if exitCode(err) != 3 {
		t.Errorf("run: %v, want exit status 3", err)
	}
	contains(t, "the output", out, "fixture: exiting with status 3", "FAIL\tgithub.com/mlbpf/mlbpf/vmtest/testdata/fixture", "(exit status 3)", "FAIL (kernel ")
}

func TestBootPanic(t *testing.T) {
	err, _, log := runBoot(t, "./testdata/fixture", "--", "-fixture=panic")
	if exitCode(err) != 1 {
		t.Errorf("run: %v, want exit status 1", err)
	}
	contains(t, "the log", log, "FAIL: the machine stopped before the tests finished", "Kernel panic - not syncing: sysrq triggered crash")
}

func TestBootHang(t *testing.T) {
	err, out, log := runBoot(t, "./testdata/fixture", "-timeout", "75s", "--", "-fixture=hang")
	if exitCode(err) != 1 {
		t.Errorf("run: %v, want exit status 1", err)
	}
	contains(t, "the output", out, "fixture: hanging")
	contains(t, "the log", log, "FAIL: the machine was still running after -timeout 1m15s: killed", "from the kernel's console:\n\t")
}
