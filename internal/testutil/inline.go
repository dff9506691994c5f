package testutil

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// CompilerSays builds the package in the test's directory with
// -gcflags=-m and fails tb unless the compiler's report matches each of
// the regular expressions: "can inline (*Batch).Next", "inlining call
// to checksumShort". Without a go command on PATH it skips (Missing).
// In a vmtest guest it skips: the compiler's decisions do not depend on
// the kernel, and make test asks on the host.
func CompilerSays(tb testing.TB, res ...string) {
	tb.Helper()
	if os.Getenv("VMTEST_GUEST") != "" {
		tb.Skip("in a vmtest guest: the compiler is asked on the host (make test)")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		Missing(tb, "no go command on PATH to ask the compiler: "+err.Error())
		return
	}
	out, err := exec.Command(gobin, "build", "-gcflags=-m", ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	for _, re := range res {
		if !regexp.MustCompile(`(?m)` + re).Match(out) {
			tb.Errorf("the compiler's report (go build -gcflags=-m) has no %q", re)
		}
	}
}
