package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RunCheckingFDs runs a package's tests (from TestMain) and fails them if
// they leave more file descriptors open than they found:
//
//	func TestMain(m *testing.M) { os.Exit(testutil.RunCheckingFDs(m)) }
func RunCheckingFDs(m *testing.M) int {
	before := OpenFDs()
	code := m.Run()
	if after := OpenFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "file descriptors leaked: %d open before the tests, %d after\n", before, after)
		code = 1
	}
	return code
}
