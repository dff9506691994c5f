package ringbuf_test

import (
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// TestNextInlined checks what Batch's documentation promises: the
// compiler inlines Next, so reading a record costs no function call. A
// change that pushes it over the inliner's budget fails here.
func TestNextInlined(t *testing.T) {
	testutil.CompilerSays(t, `can inline \(\*Batch\)\.Next( |$)`)
}
