package synthetic

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// flipBlock is the control block a flipping writer stores with generation
// g, and the one arm a decision for a key with a valid recommendation can
// take under it. Each generation differs from the next in mode, state or
// lease, so a decision or a record that mixes two blocks shows.
func flipBlock(g uint32, now uint64) (model.Control, model.Arm) {
	live, expired := now+uint64(time.Hour), uint64(1)
	c := model.Control{State: model.StateRunning, Mode: model.ModeRecommendation, LeaseExpiresNs: live, Generation: g}
	switch g % 6 {
	case 0:
		return c, model.ArmModel // holdout 0: always applied
	case 1:
		c.Mode = model.ModeLearning
		return c, model.ArmShadow
	case 2:
		c.State = model.StateStopped
		return c, model.ArmFallback
	case 3:
		c.Mode, c.CollabPermille = model.ModeCollaboration, 0
		return c, model.ArmControl
	case 4:
		c.LeaseExpiresNs, c.HoldoutPermille = expired, model.Permille
		return c, model.ArmFallback
	default:
		c.Mode = model.ModeEmergency
		return c, model.ArmFallback
	}
}

// firstFlip is the first generation the flipping writer stores; records
// with a lower one were decided before it started.
const firstFlip = 1 << 20

// TestDecisionSeesOneBlock decides a million times through
// BPF_PROG_TEST_RUN while a writer rewrites the control block as fast as
// it can, flipping mode, state and lease at every write. Every record must
// carry a (mode, arm, generation) that the block of that generation
// produces: a decision made under one block and recorded with another's
// mode or generation is false evidence for the controller.
//
// Before the snapshot (mlbpf_decide read the block field by field and
// mlbpf_fill_hdr re-read mode and generation) this found thousands of
// mixed records per million decisions.
func TestDecisionSeesOneBlock(t *testing.T) {
	decisions := 1_000_000
	if testing.Short() {
		decisions = 100_000
	}
	r := newRig(t, model.Options{Lease: time.Hour, InitialMode: model.ModeRecommendation})
	if err := r.m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	const key = 7
	if err := r.s.Recommend(key, 99, 1); err != nil {
		t.Fatal(err)
	}
	now := loader.MonotonicNs()
	ctl := r.s.Control()
	store := func(g uint32) {
		c, _ := flipBlock(g, now)
		if err := ctl.StoreControl(c); err != nil {
			t.Error(err)
		}
	}
	store(firstFlip)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes atomic.Uint64
	wg.Go(func() { // the writer
		for g := uint32(firstFlip + 1); ctx.Err() == nil; g++ {
			store(g)
			writes.Add(1)
		}
	})
	var checked, mixed, unknown atomic.Uint64
	var firstMixed atomic.Value
	wg.Go(func() { // the reader of the records
		check := func(rec *ringbuf.Record) {
			var d Record
			if err := DecodeRecord(rec.RawSample, &d); err != nil {
				t.Error(err)
				return
			}
			checked.Add(1)
			g, mode, arm := d.Hdr.Generation, model.Mode(d.Hdr.Mode), model.Arm(d.Hdr.Arm)
			if g == 0 && mode == model.ModeUnknown && arm == model.ArmFallback {
				unknown.Add(1) // no consistent copy: the default, said so
				return
			}
			want, wantArm := flipBlock(g, now)
			if g < firstFlip || mode != want.Mode || arm != wantArm {
				if mixed.Add(1) == 1 {
					firstMixed.Store(fmt.Sprintf("record (mode %v, arm %v, generation %d); that generation's block is mode %v state %v -> arm %v",
						mode, arm, g, want.Mode, want.State, wantArm))
				}
			}
		}
		var rec ringbuf.Record
		for {
			r.rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
			err := r.rd.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			check(&rec)
		}
	})
	for range decisions {
		if _, err := r.s.Apply(key); err != nil {
			t.Error(err)
			break
		}
	}
	cancel()
	wg.Wait()
	lost, err := r.s.LostRecords()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d decisions, %d block writes, %d records checked (%d lost in the ring), %d mixed, %d without a consistent copy",
		decisions, writes.Load(), checked.Load(), lost, mixed.Load(), unknown.Load())
	if n := mixed.Load(); n > 0 {
		t.Errorf("%d records name a (mode, arm, generation) their block never had; first: %s", n, firstMixed.Load())
	}
	if checked.Load() < uint64(decisions)/2 {
		t.Errorf("only %d of %d records checked", checked.Load(), decisions)
	}
	if writes.Load() < 1000 {
		t.Errorf("only %d block writes during the decisions: the test raced nothing", writes.Load())
	}
}

// BenchmarkDecision measures what the applier costs per decision, from
// the kernel's own accounting of the program's run time
// (BPF_ENABLE_STATS), while nothing else writes the block: the
// "ns/decision" metric. It includes the recommendation lookup and the
// record (ring buffer reserve and submit), which every decision makes.
//
//	sudo go test ./synthetic -run '^$' -bench Decision -count 10
func BenchmarkDecision(b *testing.B) {
	testutil.RequireBPF(b)
	root := testutil.PinRoot(b)
	s, err := Open(Config{PinRoot: root, Model: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := loader.MonotonicNs()
	c, _ := flipBlock(0, now)
	if err := s.Control().StoreControl(c); err != nil {
		b.Fatal(err)
	}
	if err := s.Recommend(7, 99, 1); err != nil {
		b.Fatal(err)
	}
	rd, err := ringbuf.NewReader(s.Events())
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enabling BPF run-time stats: %v", err)
	}
	defer stats.Close()
	runtime := func() (time.Duration, uint64) {
		st, err := s.Program().Stats()
		if err != nil {
			b.Fatal(err)
		}
		return st.Runtime, st.RunCount
	}
	d0, n0 := runtime()
	var rec ringbuf.Record
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Apply(7); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 1023 { // keep the ring from filling up
			for {
				rd.SetDeadline(time.Now())
				if rd.ReadInto(&rec) != nil {
					break
				}
			}
		}
	}
	b.StopTimer()
	d1, n1 := runtime()
	if n1 > n0 {
		b.ReportMetric(float64(d1-d0)/float64(n1-n0), "ns/decision")
	}
}
