package rto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/testbed"
)

// DemoOptions configures Demo. Zero fields take the defaults.
type DemoOptions struct {
	// MaxFlows is the most flows made per path (default 400); the demo
	// stops earlier, Tail flows per path after every prefix has chosen.
	MaxFlows, Tail int
	// Bytes is one flow's transfer (default 64 KiB).
	Bytes int64
	// LossPercent is the lossy path's loss each way (default 5).
	LossPercent float64
}

func (o DemoOptions) withDefaults() DemoOptions {
	if o.MaxFlows == 0 {
		o.MaxFlows = 400
	}
	if o.Tail == 0 {
		o.Tail = 50
	}
	if o.Bytes == 0 {
		o.Bytes = 64 << 10
	}
	if o.LossPercent == 0 {
		o.LossPercent = 5
	}
	return o
}

// Demo builds the two-path testbed (testbed.Paths: a lossy path and a
// bloated one), runs tcp/rto on its cgroup with pins under pinRoot, and
// sends 64 KB flows on both paths at once while the model learns,
// printing both paths side by side: flows, the tail flow completion time
// per grid setting, and what the model chose.
func Demo(ctx context.Context, w io.Writer, pinRoot string, opts DemoOptions) (err error) {
	opts = opts.withDefaults()
	tb, err := testbed.NewPaths(ctx, testbed.PathsConfig{LossPercent: opts.LossPercent, Cgroup: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tb.Close()) }()
	fmt.Fprintf(w, "testbed: lossy path %s (%.0f %% loss each way), bloat path %s (tbf 20mbit, 1 MB queue kept full)\n",
		testbed.LossyAddrs.Server, opts.LossPercent, testbed.BloatAddrs.Server)
	if rtt, err := tb.WaitBloated(ctx, 200*time.Millisecond, 30*time.Second); err != nil {
		return err
	} else {
		fmt.Fprintf(w, "bloat path queue full: background flow RTT %v\n", rtt.Round(time.Millisecond))
	}
	loop, err := Subsystem().Open(pipeline.Env{Model: ModelName, PinRoot: pinRoot, Options: DefaultOptions()},
		&SectionConfig{Cgroup: tb.Cgroup()})
	if err != nil {
		return err
	}
	o := loop.Objects().(*Objects)
	defer func() { err = errors.Join(err, loop.Close(), loader.RemovePins(o.Dir())) }()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(rctx) }()

	paths := []testbed.Path{testbed.PathLossy, testbed.PathBloat}
	sinks := map[testbed.Path]*testbed.Sink{}
	for _, p := range paths {
		s, err := tb.NewSink(p, false)
		if err != nil {
			return err
		}
		defer s.Close()
		sinks[p] = s
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := map[testbed.Path]int{}
	var firstErr error
	decidedAt := -1
	for _, p := range paths {
		workers := 4
		if p == testbed.PathBloat {
			workers = 8
		}
		for range workers {
			wg.Go(func() {
				for {
					mu.Lock()
					n := sent[p]
					done := n >= opts.MaxFlows || decidedAt >= 0 && n >= decidedAt+opts.Tail || firstErr != nil
					sent[p]++
					mu.Unlock()
					if done || rctx.Err() != nil {
						return
					}
					fctx, cancel := context.WithTimeout(rctx, time.Minute)
					_, err := tb.Send(fctx, sinks[p].Addr(), testbed.Load{Bytes: opts.Bytes})
					cancel()
					if err != nil && rctx.Err() == nil {
						fmt.Fprintf(os.Stderr, "demo: %s flow: %v\n", p, err)
					}
				}
			})
		}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	for {
		select {
		case <-ctx.Done():
			<-finished
			return ctx.Err()
		case err := <-runErr:
			mu.Lock()
			firstErr = err
			mu.Unlock()
			<-finished
			return err
		case <-finished:
			demoTable(w, loop.Model(), o)
			stop()
			return <-runErr
		case <-tick.C:
		}
		demoTable(w, loop.Model(), o)
		if !o.Learner().Exploring() && len(o.Learner().Destinations()) == len(paths) {
			mu.Lock()
			if decidedAt < 0 {
				decidedAt = max(sent[testbed.PathLossy], sent[testbed.PathBloat])
			}
			mu.Unlock()
		}
	}
}

func demoTable(w io.Writer, m *model.Model, o *Objects) {
	arms, _ := o.ArmCounts()
	fmt.Fprintf(w, "\nmode %v  arms model=%d control=%d no_rec=%d fallback=%d rejected=%d\n", m.Mode(),
		arms[model.ArmModel], arms[model.ArmControl], arms[model.ArmNoRec], arms[model.ArmFallback], arms[model.ArmRejected])
	for _, d := range o.Learner().Destinations() {
		chosen := "exploring"
		if d.Chosen >= 0 {
			chosen = fmt.Sprintf("%s after %d flows", d.Setting, d.LearnedAfter)
		}
		fmt.Fprintf(w, "  %-18s flows %4d  chosen: %s\n", d.Prefix, d.Flows, chosen)
		for _, a := range d.Arms {
			fmt.Fprintf(w, "    %-24s flows %4d  worst-10%% mean %7.1f ms [%7.1f, %7.1f]\n", a.Setting, a.Flows, a.Q, a.QLow, a.QHigh)
		}
	}
}
