package headless

import (
	"os"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// ForTest returns the Chromium for a test, or skips it: when there is
// none (testutil.Missing: a failure under MLBPF_CI=1), and in a vmtest
// guest (VMTEST_GUEST), where what a page shows does not depend on the
// kernel and the browser would run on an emulated CPU: make test renders
// the pages on the host.
func ForTest(tb testing.TB) *Browser {
	tb.Helper()
	if os.Getenv("VMTEST_GUEST") != "" {
		tb.Skip("in a vmtest guest: pages do not depend on the kernel, and make test renders them on the host")
	}
	b, err := Find()
	if err != nil {
		testutil.Missing(tb, err.Error())
	}
	return b
}
