package rabench

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/readahead"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// sampleEvery is how often a measurement of mlbpf looks at the device's
// block: its arm, and whether a new cycle of blocks has begun.
const sampleEvery = 10 * time.Millisecond

// learnedRun is one measurement of mlbpf.
type learnedRun struct {
	MBps float64
	// Arms is the workload's bytes and time under each arm in force
	// (MODEL, CONTROL: the default), sampled every sampleEvery (Ops
	// unset).
	Arms map[model.Arm]*testbed.Stats
	// Aligned is false if no new cycle began in time (a mode without
	// draws): the measurement then ran d plus a cycle's most.
	Aligned bool
}

// cycleMeter measures mlbpf over whole cycles of its time blocks: what a
// user gets in the long run, its holdout included at exactly its share
// (RECOMMENDATION: one block in 20 on the default, at a random position;
// COLLABORATION: one in 2), rather than the luck of where a holdout
// block fell.
type cycleMeter struct {
	tb *testbed.Testbed
	tu *readahead.Tuner
	wl testbed.Workload
	d  time.Duration // a measurement's least length
}

func (m cycleMeter) block() readahead.BlockState {
	st, _ := m.tu.Block(m.tb.Name)
	return st
}

// longest is how long a measurement waits for a cycle's start beyond
// the time it needs: the longest cycle and a block.
func (m cycleMeter) longest() time.Duration {
	st := m.block()
	return time.Duration(readahead.MaxCycle+1) * max(st.Block, time.Second)
}

// start runs the workload (unmeasured) until a new cycle begins, so that
// the first measurement starts at a cycle's start.
func (m cycleMeter) start(ctx context.Context) error {
	c0 := m.block().Cycles
	_, err := m.run(ctx, time.Hour, func(time.Duration) bool { return m.block().Cycles != c0 }, m.longest())
	return err
}

// measure is one measurement, begun at a cycle's start (the one start or
// the last measurement left it at): seq, random and mmap run until the
// first cycle that begins at least d after the start, so that the
// measurement is whole cycles (in RECOMMENDATION one cycle of 20 blocks:
// the next measurement starts with the next cycle); phased runs whole
// jobs for at least a whole cycle (a job cannot stop at a block: a
// second holdout block may fall in its last job).
func (m cycleMeter) measure(ctx context.Context) (learnedRun, error) {
	b := m.block()
	c0 := b.Cycles
	cycle := time.Duration(b.CycleBlocks) * b.Block
	cd := c0 // the cycle in progress once d has passed
	passed := false
	stop := func(el time.Duration) bool {
		c := m.block().Cycles
		if el < m.d {
			return false
		}
		if !passed {
			passed, cd = true, c
			return false
		}
		return c != cd
	}
	if m.wl == testbed.Phased {
		return m.run(ctx, max(m.d, cycle), nil, 0)
	}
	r, err := m.run(ctx, time.Hour, stop, m.d+m.longest())
	return r, err
}

// run runs the workload for d (phased: whole jobs until d has passed), or
// until stop says so, or for at most limit; it samples the arm in force
// every sampleEvery and attributes the bytes read since the last sample
// to it.
func (m cycleMeter) run(ctx context.Context, d time.Duration, stop func(elapsed time.Duration) bool, limit time.Duration) (learnedRun, error) {
	r := learnedRun{Arms: map[model.Arm]*testbed.Stats{}, Aligned: true}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var progress atomic.Int64
	type result struct {
		st  testbed.Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := m.tb.Run(rctx, m.wl, d, &progress)
		done <- result{st, err}
	}()
	start, last := time.Now(), time.Now()
	arm, bytes := m.block().Arm, progress.Load()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		select {
		case res := <-done:
			r.MBps = res.st.MBps()
			return r, res.err
		case now := <-tick.C:
			b := progress.Load()
			a := r.Arms[arm]
			if a == nil {
				a = &testbed.Stats{}
				r.Arms[arm] = a
			}
			a.Bytes += b - bytes
			a.Elapsed += now.Sub(last)
			arm, bytes, last = m.block().Arm, b, now
			el := now.Sub(start)
			if limit > 0 && el >= limit {
				r.Aligned = false
				cancel()
			} else if stop != nil && stop(el) {
				cancel()
			}
		}
	}
}
