// Package tcpbench measures tcp/cc on the testbed: goodput with each
// congestion control fixed and with mlbpf choosing after it has learned,
// at several loss rates, plus the cost of the sock_ops program and its
// effect on the connection setup rate. `make bench-tcp` runs it through
// cmd/tcpbench.
package tcpbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// Config configures a benchmark run. Zero fields take the defaults.
type Config struct {
	// Losses are the loss rates measured, in percent (default 0, 2, 10).
	Losses []float64
	// Runs is the number of iperf3 runs per arm and loss rate (default
	// 11), each of RunDuration (whole seconds, default 1s) with Parallel
	// streams (default 4: each run averages several connections, and
	// mlbpf's holdout shows in proportion). Arms are measured in turn, run after run, each
	// run starting with another arm, so that drift in the machine's speed
	// hits them alike; an arm's goodput is the median of its runs, which
	// a burst of load from elsewhere on the machine does not move.
	Runs        int
	RunDuration time.Duration
	Parallel    int
	// Learn is one learning connection's load (default 100 ms of
	// sending); LearnWorkers connections run at a time (default 3), at
	// most MaxLearn in all (default 150).
	Learn        testbed.Load
	LearnWorkers int
	MaxLearn     int
	// RateRounds and RateRound size the connection rate measurement:
	// rounds of RateRound (default 200ms) without and with the program,
	// alternately (default 15 each). Short alternating rounds keep the
	// comparison fair on a machine whose load changes.
	RateRounds int
	RateRound  time.Duration
	// Logger gets progress (default: discarded).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if len(c.Losses) == 0 {
		c.Losses = []float64{0, 2, 10}
	}
	if c.Runs == 0 {
		c.Runs = 11
	}
	if c.RunDuration == 0 {
		c.RunDuration = time.Second
	}
	if c.Parallel == 0 {
		c.Parallel = 4
	}
	if c.Learn == (testbed.Load{}) {
		c.Learn = testbed.Load{Duration: 100 * time.Millisecond}
	}
	if c.LearnWorkers == 0 {
		c.LearnWorkers = 3
	}
	if c.MaxLearn == 0 {
		c.MaxLearn = 150
	}
	if c.RateRounds == 0 {
		c.RateRounds = 15
	}
	if c.RateRound == 0 {
		c.RateRound = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// defaultCC is the testbed namespaces' default congestion control.
const defaultCC = "cubic"

// Result is one loss rate's measurement. Goodputs are in bits/s.
type Result struct {
	Loss    float64
	Fixed   map[string]float64 // per algorithm, set by the application
	Default float64
	BestCC  string
	Best    float64
	MLBPF   float64
	// Mode is the model's mode at the end; LearnedAfter the number of
	// connections made until it reached RECOMMENDATION (0: it did not).
	Mode         model.Mode
	LearnedAfter int
	// Chosen counts what mlbpf's iperf3 streams ran.
	Chosen map[string]int
}

// Line formats r as the benchmark's summary line.
func (r Result) Line() string {
	learned := "-"
	if r.LearnedAfter > 0 {
		learned = fmt.Sprint(r.LearnedAfter)
	}
	return fmt.Sprintf("tcp loss=%g%% default=%.0f best=%s:%.0f mlbpf=%.0f vs_default=%.2f vs_best=%.2f mode=%v learned_after=%s",
		r.Loss, r.Default/1e6, r.BestCC, r.Best/1e6, r.MLBPF/1e6, r.MLBPF/r.Default, r.MLBPF/r.Best, r.Mode, learned)
}

// Cost is what the sock_ops program costs.
type Cost struct {
	// NsPerConn is the program's run time per connection (both of its
	// sockets are in the cgroup), NsPerCall per invocation, CallsPerConn
	// the invocations per connection.
	NsPerConn, NsPerCall, CallsPerConn float64
	// RateWith and RateWithout are connections per second with the
	// program attached (model running) and detached; Ratio is the median
	// of the rounds' ratios.
	RateWith, RateWithout, Ratio float64
}

// Line formats c as the benchmark's cost line.
func (c Cost) Line() string {
	return fmt.Sprintf("tcp sock_ops cost=%.0fns/connection (%.0fns/call, %.1f calls/connection) connect_rate with=%.0f/s without=%.0f/s ratio=%.3f",
		c.NsPerConn, c.NsPerCall, c.CallsPerConn, c.RateWith, c.RateWithout, c.Ratio)
}

// Run builds a testbed, runs the benchmark and writes one line per loss
// rate and one cost line to w. It needs root and iperf3.
func Run(ctx context.Context, w io.Writer, cfg Config) ([]Result, Cost, error) {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	tb, err := testbed.New(ctx, testbed.Config{Cgroup: true, CongestionControl: defaultCC})
	if err != nil {
		return nil, Cost{}, err
	}
	defer tb.Close()
	if err := tb.StartIperf(ctx); err != nil {
		return nil, Cost{}, err
	}
	avail, err := tcp.Available()
	if err != nil {
		return nil, Cost{}, err
	}
	var algs []string
	for _, a := range []string{"cubic", "bbr", "reno"} {
		if slices.Contains(avail, a) {
			algs = append(algs, a)
		}
	}

	var results []Result
	for _, loss := range cfg.Losses {
		if err := tb.SetLoss(loss); err != nil {
			return results, Cost{}, err
		}
		r, err := measureLoss(ctx, tb, cfg, algs, loss)
		if err != nil {
			return results, Cost{}, fmt.Errorf("measuring at %g%% loss: %w", loss, err)
		}
		log.Info("measured", "loss", loss, "line", r.Line(), "fixed", r.Fixed, "mlbpf_streams", r.Chosen)
		fmt.Fprintln(w, r.Line())
		results = append(results, r)
	}
	if err := tb.SetLoss(0); err != nil {
		return results, Cost{}, err
	}
	cost, err := measureCost(ctx, tb, cfg)
	if err != nil {
		return results, cost, fmt.Errorf("measuring the cost: %w", err)
	}
	fmt.Fprintln(w, cost.Line())
	return results, cost, nil
}

// mlbpf is a tcp/cc model running on the testbed's cgroup with its own
// pins, removed by close.
type mlbpf struct {
	sub  *tcp.Objects
	root string
	stop context.CancelFunc
	done chan error
}

func startMLBPF(tb *testbed.Testbed, log *slog.Logger, tweak ...func(*tcp.Config)) (*mlbpf, error) {
	root, err := testbed.TempPinRoot("mlbpf-bench")
	if err != nil {
		return nil, err
	}
	opts := tcp.DefaultOptions()
	// A short period so that learning is quick, and a lease long enough
	// that a busy machine stalling the runner (for seconds, at times, on
	// a shared 2-CPU host) does not make the model lose it.
	opts.SleepTimeout = 100 * time.Millisecond
	opts.Lease = 5 * time.Second
	cfg := tcp.Config{PinRoot: root, Cgroup: tb.Cgroup(), Default: defaultCC, Options: opts, Logger: log}
	for _, f := range tweak {
		f(&cfg)
	}
	sub, err := tcp.Open(cfg)
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &mlbpf{sub: sub, root: root, stop: cancel, done: make(chan error, 1)}
	go func() { m.done <- sub.Run(ctx, nil) }()
	return m, nil
}

func (m *mlbpf) close() error {
	m.stop()
	err := <-m.done
	err = errors.Join(err, m.sub.Rollback(), os.RemoveAll(m.root))
	return err
}

func measureLoss(ctx context.Context, tb *testbed.Testbed, cfg Config, algs []string, loss float64) (Result, error) {
	r := Result{Loss: loss, Fixed: map[string]float64{}, Chosen: map[string]int{}}
	m, err := startMLBPF(tb, cfg.Logger)
	if err != nil {
		return r, err
	}
	defer func() { _ = m.close() }()

	// Learning, from short connections.
	sink, err := tb.NewSink(false)
	if err != nil {
		return r, err
	}
	var made atomic.Int64
	learned := func() bool { return m.sub.Model().Mode() == model.ModeRecommendation }
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range cfg.LearnWorkers {
		wg.Go(func() {
			for lctx.Err() == nil && !learned() && made.Load() < int64(cfg.MaxLearn) {
				made.Add(1)
				tctx, tcancel := context.WithTimeout(lctx, 30*time.Second)
				_, err := tb.Send(tctx, sink.Addr(), cfg.Learn, "")
				tcancel()
				if err != nil && lctx.Err() == nil {
					firstErr.CompareAndSwap(nil, err)
					cancel()
				}
			}
		})
	}
	wg.Wait()
	cancel()
	_ = sink.Close()
	if err, _ := firstErr.Load().(error); err != nil {
		return r, err
	}
	if learned() {
		r.LearnedAfter = int(made.Load())
	}
	// Let the runner read the last records and settle.
	time.Sleep(300 * time.Millisecond)

	// Measurement: every fixed algorithm and mlbpf, in turn.
	runs := map[string][]float64{}
	arms := append(slices.Clone(algs), "mlbpf")
	for run := range cfg.Runs {
		// Each run starts with another arm, so that no arm always
		// follows the same one.
		for i := range arms {
			arm := arms[(i+run)%len(arms)]
			o := testbed.IperfOptions{Duration: cfg.RunDuration, Parallel: cfg.Parallel}
			if arm != "mlbpf" {
				o.CC = arm
			}
			res, err := tb.Iperf(ctx, o)
			if err != nil {
				return r, err
			}
			runs[arm] = append(runs[arm], res.BitsPerSecond)
			if arm == "mlbpf" {
				r.Chosen[res.CC]++
			}
		}
	}
	for _, a := range algs {
		r.Fixed[a] = median(runs[a])
		if r.Fixed[a] > r.Best {
			r.Best, r.BestCC = r.Fixed[a], a
		}
	}
	r.Default = r.Fixed[defaultCC]
	r.MLBPF = median(runs["mlbpf"])
	r.Mode = m.sub.Model().Mode()
	return r, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// measureCost measures the connection setup rate with the program
// detached and attached, in alternating rounds, then the program's run
// time per connection from the kernel's BPF statistics, in rounds of
// their own (the statistics cost time of their own).
func measureCost(ctx context.Context, tb *testbed.Testbed, cfg Config, tweak ...func(*tcp.Config)) (Cost, error) {
	var c Cost
	m, err := startMLBPF(tb, cfg.Logger, tweak...)
	if err != nil {
		return c, err
	}
	defer func() { _ = m.close() }()
	sink, err := tb.NewSink(false)
	if err != nil {
		return c, err
	}
	defer sink.Close()

	var with, without float64
	var ratios []float64
	for range cfg.RateRounds {
		if err := m.sub.Detach(); err != nil {
			return c, err
		}
		n, d, err := connectLoop(ctx, tb, sink.Addr(), cfg.RateRound)
		if err != nil {
			return c, err
		}
		off := float64(n) / d.Seconds()
		if err := m.sub.Attach(); err != nil {
			return c, err
		}
		if n, d, err = connectLoop(ctx, tb, sink.Addr(), cfg.RateRound); err != nil {
			return c, err
		}
		on := float64(n) / d.Seconds()
		with, without = with+on, without+off
		if off > 0 {
			ratios = append(ratios, on/off)
		}
	}
	rounds := float64(cfg.RateRounds)
	c.RateWith, c.RateWithout = with/rounds, without/rounds
	if len(ratios) > 0 {
		c.Ratio = median(ratios)
	}

	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return c, fmt.Errorf("enabling BPF run time statistics: %w", err)
	}
	defer stats.Close()
	ns0, cnt0, err := progStats(m.sub.Program())
	if err != nil {
		return c, err
	}
	n, _, err := connectLoop(ctx, tb, sink.Addr(), time.Second)
	if err != nil {
		return c, err
	}
	ns1, cnt1, err := progStats(m.sub.Program())
	if err != nil {
		return c, err
	}
	if n > 0 {
		c.NsPerConn = float64(ns1-ns0) / float64(n)
		c.CallsPerConn = float64(cnt1-cnt0) / float64(n)
	}
	if cnt1 > cnt0 {
		c.NsPerCall = float64(ns1-ns0) / float64(cnt1-cnt0)
	}
	return c, nil
}

func progStats(p *ebpf.Program) (ns, cnt uint64, err error) {
	st, err := p.Stats()
	if err != nil {
		return 0, 0, fmt.Errorf("reading program statistics: %w", err)
	}
	return uint64(st.Runtime), st.RunCount, nil
}

// connectLoop opens and closes connections (reset on close, so that no
// TIME_WAIT piles up) from two threads in the client namespace for d and
// returns how many.
func connectLoop(ctx context.Context, tb *testbed.Testbed, addr string, d time.Duration) (int64, time.Duration, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	end := start.Add(d)
	for range 2 {
		wg.Go(func() {
			err := tb.Client.Do(func() error {
				var dialer net.Dialer
				for time.Now().Before(end) && ctx.Err() == nil {
					c, err := dialer.DialContext(ctx, "tcp4", addr)
					if err != nil {
						if strings.Contains(err.Error(), "cannot assign requested address") {
							continue
						}
						return err
					}
					_ = c.(*net.TCPConn).SetLinger(0)
					_ = c.Close()
					n.Add(1)
				}
				return nil
			})
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return n.Load(), time.Since(start), ctx.Err()
}
