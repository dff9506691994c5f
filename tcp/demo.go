package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/testbed"
)

// DemoOptions configures Demo. Zero fields take the defaults.
type DemoOptions struct {
	// Loss is the testbed's loss rate in percent, used as given: 0 shows
	// a path where the default is best and nothing is promoted.
	// DefaultDemoOptions has 10.
	Loss float64
	// Connections is the most connections made (default 150); the demo
	// stops earlier, once the model is in RECOMMENDATION and Tail more
	// connections have shown what new connections run.
	Connections int
	Tail        int // default 10
	// Load is what one connection sends (default 100 ms of sending).
	Load testbed.Load
	// Workers is how many connections run at a time (default 3).
	Workers int
	// Period is the model's period (default 100ms; the daemon uses 1s).
	Period time.Duration
	// Logger, if set, gets the subsystem's logs.
	Logger *slog.Logger
}

// DefaultDemoOptions returns the options of `mlbpf demo tcp`: 10 % loss,
// where bbr beats the default cubic.
func DefaultDemoOptions() DemoOptions { return DemoOptions{Loss: 10} }

func (o DemoOptions) withDefaults() DemoOptions {
	if o.Connections == 0 {
		o.Connections = 150
	}
	if o.Tail == 0 {
		o.Tail = 10
	}
	if o.Load == (testbed.Load{}) {
		o.Load = testbed.Load{Duration: 100 * time.Millisecond}
	}
	if o.Workers == 0 {
		o.Workers = 3
	}
	if o.Period == 0 {
		o.Period = 100 * time.Millisecond
	}
	return o
}

// Demo shows tcp/cc learning on a testbed (mlbpf demo tcp): it builds a
// client and a server network namespace joined by a lossy veth pair,
// attaches tcp/cc to a cgroup holding this process, makes short
// connections from the client to the server and prints, as they happen,
// the model's progress, its mode changes and the goodput of each arm,
// then a summary. Everything it built is removed on return, also when ctx
// is cancelled (Ctrl-C).
func Demo(ctx context.Context, w io.Writer, opts DemoOptions) (err error) {
	o := opts.withDefaults()
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	pr := &printer{w: w, start: time.Now()}
	pr.printf("building the testbed: client and server namespaces, a veth pair, %g%% loss from client to server, default cubic\n", o.Loss)
	tb, err := testbed.New(ctx, testbed.Config{LossPercent: o.Loss, Cgroup: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tb.Close()) }()

	root, err := testbed.TempPinRoot("mlbpf-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	mopts := DefaultOptions()
	mopts.SleepTimeout = o.Period
	mopts.Lease = max(5*time.Second, 3*o.Period)
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sub, err := Open(Config{PinRoot: root, Cgroup: tb.Cgroup(), Default: "cubic", Options: mopts, Logger: logger})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sub.Rollback()) }()
	pr.printf("tcp/cc attached to cgroup %s, pins under %s; algorithms: %s; mode %v\n",
		tb.Cgroup(), sub.Dir(), strings.Join(sub.Allowed(), ", "), sub.Model().Mode())

	rctx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	var seen atomic.Int64 // mode changes printed
	go func() {
		runDone <- sub.Run(rctx, func(st Status) { pr.progress(st, &seen) })
	}()
	defer func() {
		stopRun()
		err = errors.Join(err, <-runDone)
	}()

	sink, err := tb.NewSink(false)
	if err != nil {
		return err
	}
	defer sink.Close()

	var (
		made, tail atomic.Int64
		learnedAt  atomic.Int64
		mu         sync.Mutex
		after      = map[string]int{}
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range o.Workers {
		wg.Go(func() {
			for dctx.Err() == nil {
				n := made.Add(1)
				if n > int64(o.Connections) || tail.Load() >= int64(o.Tail) {
					return
				}
				learned := sub.Model().Mode() == model.ModeRecommendation
				if learned {
					learnedAt.CompareAndSwap(0, n-1)
				}
				tctx, tcancel := context.WithTimeout(dctx, 30*time.Second)
				tr, err := tb.Send(tctx, sink.Addr(), o.Load, "")
				tcancel()
				if err != nil {
					// A transfer cut short by the demo's end is no error;
					// the socket's deadline can fire before the context
					// says it is done.
					if dctx.Err() == nil && !pastDeadline(dctx) {
						firstErr.CompareAndSwap(nil, err)
						cancel()
					}
					return
				}
				if learned {
					tail.Add(1)
					mu.Lock()
					after[tr.CC]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Interrupted: a transfer cut short is no error.
		pr.printf("interrupted: cleaning up\n")
		return nil
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	time.Sleep(3 * o.Period) // the last records
	st := sub.Status()
	pr.progress(st, &seen)
	pr.summary(st, learnedAt.Load(), after, tb)
	return nil
}

type printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	last  time.Time
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%5.1fs] "+format, append([]any{time.Since(p.start).Seconds()}, args...)...)
}

// progress prints new mode changes at once, and a progress line at most
// once a second.
func (p *printer) progress(st Status, seen *atomic.Int64) {
	for i := int(seen.Load()); i < len(st.Changes); i++ {
		c := st.Changes[i]
		if c.From == model.ModeUnknown || c.From == model.ModeEmergency && c.To == model.ModeLearning {
			continue // creation and initialization
		}
		p.printf("MODE %v → %v: %s\n", c.From, c.To, c.Reason)
	}
	seen.Store(int64(len(st.Changes)))
	p.mu.Lock()
	due := time.Since(p.last) >= time.Second
	if due {
		p.last = time.Now()
	}
	p.mu.Unlock()
	if !due {
		return
	}
	rec := "none"
	for _, d := range st.Destinations {
		if d.Recommended != "" {
			rec = d.Prefix.String() + " → " + d.Recommended
		}
	}
	p.printf("%3d transfers  mode %-14v recommendation %-22s goodput %s\n", st.Transfers, st.Mode, rec, armGoodput(st))
}

func armGoodput(st Status) string {
	var parts []string
	for _, arm := range []model.Arm{model.ArmNoRec, model.ArmShadow, model.ArmControl, model.ArmModel} {
		if g, ok := st.Goodput[arm.String()]; ok {
			parts = append(parts, fmt.Sprintf("%s %.0f Mbit/s (%d)", arm, g.Mean*8/1e6, g.Transfers))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func (p *printer) summary(st Status, learnedAt int64, after map[string]int, tb *testbed.Testbed) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.w
	fmt.Fprintf(w, "\nsummary (%.1fs, %g%% loss):\n", time.Since(p.start).Seconds(), tb.Loss())
	fmt.Fprintf(w, "  mode: %v after %d transfers\n", st.Mode, st.Transfers)
	if learnedAt > 0 {
		fmt.Fprintf(w, "  reached RECOMMENDATION after %d connections\n", learnedAt)
	}
	for _, d := range st.Destinations {
		rec := d.Recommended
		if rec == "" {
			rec = "nothing (the default is kept)"
		}
		fmt.Fprintf(w, "  %s: %d transfers, loss %.1f%%, recommends %s\n", d.Prefix, d.Transfers, 100*d.Loss, rec)
		names := make([]string, 0, len(d.Algorithms))
		for n := range d.Algorithms {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			a := d.Algorithms[n]
			fmt.Fprintf(w, "    %-6s believed %8.1f Mbit/s  (%.0f transfers seen, %.0f predicted)\n", n, a.Goodput*8/1e6, a.Observed, a.Predicted)
		}
	}
	if len(after) > 0 {
		var parts []string
		for cc, n := range after {
			parts = append(parts, fmt.Sprintf("%s %d", cc, n))
		}
		slices.Sort(parts)
		fmt.Fprintf(w, "  new connections, as their sockets report (getsockopt TCP_CONGESTION): %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "  kernel decisions per arm: %s\n", formatArms(st.Arms))
	fmt.Fprintf(w, "  goodput per arm in the final mode: %s\n", armGoodput(st))
}

func formatArms(arms map[string]uint64) string {
	var parts []string
	for i := range model.ArmCount {
		name := model.Arm(i).String()
		if n := arms[name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", name, n))
		}
	}
	return strings.Join(parts, ", ")
}

// pastDeadline reports whether ctx's deadline, if it has one, has passed.
func pastDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
