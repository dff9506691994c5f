package readahead

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// DemoOptions configures Demo. Zero fields take the defaults.
type DemoOptions struct {
	// Workload is what the testbed runs (default seq).
	Workload testbed.Workload
	// Throttle is the testbed device's cap (default 100 read IOPS).
	Throttle testbed.Throttle
	// Duration is the most the demo runs (default 90 s); it ends 10 s
	// after the model reaches RECOMMENDATION.
	Duration time.Duration
}

// Demo shows the model learning on a testbed of its own: a throttled loop
// device, the workload running on it, the model in COLLABORATION. Every
// second it prints the setting in force, the arm, the phase, the
// workload's throughput and the mode; at the end, what it learned and the
// device's setting after the model stopped. Everything it builds is
// removed when it ends or ctx is cancelled.
func Demo(ctx context.Context, w io.Writer, o DemoOptions) error {
	if o.Workload == "" {
		o.Workload = testbed.Seq
	}
	if o.Throttle == (testbed.Throttle{}) {
		o.Throttle = testbed.Throttle{ReadIOPS: 100}
	}
	if o.Duration == 0 {
		o.Duration = 90 * time.Second
	}
	tb, err := testbed.New(ctx, testbed.Config{Throttle: o.Throttle})
	if err != nil {
		return err
	}
	defer tb.Close()
	state, pinDir, cleanup, err := TempDirs()
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(w, "testbed: %s (ext4 on a loop device over tmpfs), reads capped at %s by %s; workload %s; read_ahead_kb %d\n",
		tb.Device, o.Throttle, tb.IOController(), o.Workload, testbed.DefaultReadAheadKB)
	tu, err := New(Config{
		Devices: []string{tb.Name}, StateDir: state, PinDir: pinDir,
		Mode: model.ModeCollaboration, Controller: model.ControllerConfig{MinSamples: 20, Confidence: 0.95, MinEffect: 0.05},
		Logf: func(f string, a ...any) { fmt.Fprintf(w, "  "+f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tu.Run(ctx) }()
	var progress atomic.Int64
	wl := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		for wctx.Err() == nil {
			if _, err := tb.Run(wctx, o.Workload, 5*time.Second, &progress); err != nil && wctx.Err() == nil {
				wl <- err
				return
			}
		}
		wl <- nil
	}()
	start := time.Now()
	var last int64
	var promoted time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	fmt.Fprintln(w, "   t  mode           arm       phase       read_ahead_kb  MB/s")
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		st := tu.Status()
		d := st.Devices[0]
		cur := progress.Load()
		fmt.Fprintf(w, "%4.0f  %-14v %-9v %-11s %13d  %5.1f\n", time.Since(start).Seconds(), st.Mode, d.Arm, d.Phase, d.KB, float64(cur-last)/1e6)
		last = cur
		if st.Mode == model.ModeRecommendation && promoted.IsZero() {
			promoted = time.Now()
		}
		if !promoted.IsZero() && time.Since(promoted) > 10*time.Second {
			break
		}
	}
	st := tu.Status()
	wcancel()
	werr := <-wl
	cancel()
	err = errors.Join(<-done, werr)
	phases := make([]string, 0, len(st.Devices[0].Learned))
	for p := range st.Devices[0].Learned {
		phases = append(phases, p)
	}
	sort.Strings(phases)
	fmt.Fprintf(w, "learned:")
	for _, p := range phases {
		fmt.Fprintf(w, " %s=%d KB", p, st.Devices[0].Learned[p])
	}
	if after, ok := tu.PromotedAfter(); ok {
		fmt.Fprintf(w, "; RECOMMENDATION after %.0f s", after.Seconds())
	} else {
		fmt.Fprintf(w, "; not promoted (mode %v)", st.Mode)
	}
	fmt.Fprintln(w)
	dev, lerr := LookupDevice(tb.Name)
	if lerr == nil {
		if kb, rerr := dev.ReadKB(); rerr == nil {
			fmt.Fprintf(w, "model stopped: %s read_ahead_kb back to %d\n", tb.Name, kb)
		}
	}
	return err
}

// TempDirs makes a state directory and a pin directory (on bpffs) for a
// model that lives as long as a demo or a benchmark; cleanup removes both.
func TempDirs() (state, pinDir string, cleanup func(), err error) {
	state, err = os.MkdirTemp("", "mlbpf-readahead-")
	if err != nil {
		return "", "", nil, fmt.Errorf("creating a state directory: %w", err)
	}
	pins, err := os.MkdirTemp("/sys/fs/bpf", "mlbpf-readahead-")
	if err != nil {
		os.RemoveAll(state)
		return "", "", nil, fmt.Errorf("creating a pin directory: %w (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)", err)
	}
	return state, filepath.Join(pins, "readahead"), func() { os.RemoveAll(state); os.RemoveAll(pins) }, nil
}
