package ringbench

import (
	"io"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// TestRunPipeline runs the pipeline benchmark once on a small ring: every
// record reaches the learner (RunPipeline checks it), and the figures are
// there.
func TestRunPipeline(t *testing.T) {
	testutil.RequireBPF(t)
	opts := DefaultOptions()
	opts.RingBytes, opts.Repeats, opts.ConsumerCPU = 256<<10, 3, -1
	r, err := RunPipeline(t.Context(), opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Records == 0 || r.Pipeline.Median <= 0 || r.Drain.Median <= 0 || r.VsDrain.Median <= 0 || r.VsChecksum.Median <= 0 || r.Checksum.Median <= 0 {
		t.Fatalf("result %+v", r)
	}
	t.Log(r)
}
