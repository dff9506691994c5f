package rabench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/readahead"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// TestMeasurementsAreWholeCycles: in RECOMMENDATION (holdout 50 ‰, 20
// blocks a cycle) every measurement of mlbpf starts at a cycle's start
// and is one whole cycle, so exactly one of its blocks is on the default:
// about one block's time under CONTROL, never none nor two.
func TestMeasurementsAreWholeCycles(t *testing.T) {
	testutil.RequireBPF(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testutil.Missing(t, "needs the loop driver (/dev/loop-control): modprobe loop")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testutil.Missing(t, "needs mkfs.ext4: apt-get install e2fsprogs")
	}
	ctx := context.Background()
	tb, err := testbed.New(ctx, testbed.Config{SizeMiB: 96, FileMiB: 24, Throttle: testbed.Throttle{ReadIOPS: 200}})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	const block = 200 * time.Millisecond
	tu, err := readahead.New(readahead.Config{Devices: []string{tb.Name}, StateDir: t.TempDir(),
		PinDir: filepath.Join(testutil.PinRoot(t), "storage", "readahead"), Block: block,
		Mode: model.ModeRecommendation, MaxMode: model.ModeRecommendation, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if tu.Mode() != model.ModeRecommendation {
		// 6.1 lacks filemap:mm_filemap_get_pages and mm_filemap_fault:
		// no reward, so the model stays in LEARNING by design and draws
		// no blocks (storage/readahead's
		// TestWithoutRewardTheModelStaysInLearning checks that there).
		_ = tu.Close()
		t.Skipf("kernel lacks %v: the readahead model has no reward here and stays in %v by design, so it draws no blocks to measure",
			tu.Collector().Missing, tu.Mode())
	}
	if err := tu.Recommend(tb.Name, 1024); err != nil { // a recommendation: every block is drawn
		t.Fatal(err)
	}
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tu.Run(tctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	m := cycleMeter{tb: tb, tu: tu, wl: testbed.Seq, d: 500 * time.Millisecond}
	if err := m.start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c0 := m.block().Cycles
		lr, err := m.measure(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var total time.Duration
		for _, a := range lr.Arms {
			total += a.Elapsed
		}
		ctl := time.Duration(0)
		if a := lr.Arms[model.ArmControl]; a != nil {
			ctl = a.Elapsed
		}
		t.Logf("measurement %d: %.2f MB/s, %v, %v on the default, cycles %d→%d", i, lr.MBps, total, ctl, c0, m.block().Cycles)
		if !lr.Aligned {
			t.Errorf("measurement %d: not whole cycles (no new cycle began)", i)
		}
		if got := m.block().Cycles; got != c0+1 {
			t.Errorf("measurement %d ran from cycle %d to %d, want one whole cycle", i, c0, got)
		}
		// One block of 200 ms (and the tuner's step, up to 50 ms, later
		// on a loaded machine more); two would be 400 ms or more.
		if ctl < block/2 || ctl >= 2*block {
			t.Errorf("measurement %d: %v on the default, want one block (%v) of the cycle's 20", i, ctl, block)
		}
		if total < 19*block {
			t.Errorf("measurement %d lasted %v, want a whole cycle of 20 blocks of %v", i, total, block)
		}
	}
}
