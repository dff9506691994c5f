package ringbuf_test

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestNextInlined checks what Batch's documentation promises: the
// compiler inlines Next, so reading a record costs no function call. A
// change that pushes it over the inliner's budget fails here.
func TestNextInlined(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH to ask the compiler: %v", err)
	}
	out, err := exec.Command(gobin, "build", "-gcflags=-m", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)can inline \(\*Batch\)\.Next( |$)`).Match(out) {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "(*Batch).Next") {
				t.Log(l)
			}
		}
		t.Fatal("the compiler does not inline (*Batch).Next")
	}
}
