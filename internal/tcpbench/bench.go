// Package tcpbench measures tcp/cc on the testbed, through the daemon a
// user runs (package daemon, as 'mlbpf run' does, with a tcp/cc model on
// the testbed's cgroup): goodput with each congestion control fixed, with
// mlbpf's program attached to the connections' cgroup (it skips sockets
// whose application chose) and detached from them, and with mlbpf
// choosing after it has learned, at several loss rates; plus the cost of
// the sock_ops program and its effect on the connection setup rate.
// `make bench-tcp` runs it through cmd/tcpbench.
//
// Every figure is a mean over rounds with its 95 % confidence interval;
// a round runs every arm once, in an order shuffled anew each round, so
// that drift in the machine's speed hits the arms alike, and ratios are
// paired by round. Rounds go on until vs_best's interval is within the
// target (±5 %) or the time budget is spent; the line says which.
//
// "Detached" arms run outside the testbed's cgroup (testbed.Outside),
// against a second iperf3 server started there, so no program of mlbpf's
// sees either end: that is the host without mlbpf, and the baseline of
// vs_default and vs_best. "Attached" arms run in the cgroup while mlbpf
// runs, with the algorithm set by the application (iperf3 -C). iperf3
// sets it after connect(), so mlbpf has already decided at
// TCP_CONNECT_CB (and set the model's algorithm, in RECOMMENDATION) when
// the application overrides it: attached/detached is what an application
// that chooses its algorithm after connecting pays for mlbpf being there.
// An application that chooses before connecting is skipped (arm
// SKIPPED): the preset arms measure that, with the testbed's own sender
// (Parallel connections of RunDuration each, the default algorithm set
// before connect) attached and detached. The learning phase makes one
// connection at a time, so that connections on different arms never
// compete for the CPUs or the link.
package tcpbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/report"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// Config configures a benchmark run. Zero fields take the defaults.
type Config struct {
	// Losses are the loss rates measured, in percent (default 0, 2, 10).
	Losses []float64
	// Algorithms are the fixed algorithms measured, those the kernel
	// offers of them (default cubic, bbr, reno).
	Algorithms []string
	// RunDuration is one iperf3 run (whole seconds, default 1s), with
	// Parallel streams (default 4: each run averages several
	// connections, and mlbpf's holdout shows in proportion).
	RunDuration time.Duration
	Parallel    int
	// Rounds: at least MinRounds (default 10), at most MaxRounds
	// (default 40), stopping as soon as vs_best's interval is within
	// ±Target (default 0.05) or Budget (default 3m15s) of measuring has
	// passed at this loss rate.
	MinRounds, MaxRounds int
	Target               float64
	Budget               time.Duration
	// Learn is one learning connection's load (default 100 ms of
	// sending), one connection at a time, at most MaxLearn (default 150).
	Learn    testbed.Load
	MaxLearn int
	// RateRounds and RateRound size the connection rate measurement:
	// rounds of RateRound (default 200ms) detached and attached,
	// alternately (default 15 each).
	RateRounds int
	RateRound  time.Duration
	// Seed seeds the arms' order (default 1).
	Seed uint64
	// Logger gets progress (default: discarded).
	Logger *slog.Logger
	// Report, if not empty, is the HTML file where Run writes the
	// report of the daemon's history at each loss rate (package report).
	Report string
}

func (c Config) withDefaults() Config {
	if len(c.Losses) == 0 {
		c.Losses = []float64{0, 2, 10}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{"cubic", "bbr", "reno"}
	}
	if c.RunDuration == 0 {
		c.RunDuration = time.Second
	}
	if c.Parallel == 0 {
		c.Parallel = 4
	}
	if c.MinRounds == 0 {
		c.MinRounds = 10
	}
	if c.MaxRounds == 0 {
		c.MaxRounds = 40
	}
	c.MaxRounds = max(c.MaxRounds, c.MinRounds)
	if c.Target == 0 {
		c.Target = 0.05
	}
	if c.Budget == 0 {
		c.Budget = 3*time.Minute + 15*time.Second
	}
	if c.Learn == (testbed.Load{}) {
		c.Learn = testbed.Load{Duration: 100 * time.Millisecond}
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
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// defaultCC is the testbed namespaces' default congestion control.
const defaultCC = "cubic"

// outsidePort is the iperf3 server started outside the testbed's cgroup.
const outsidePort = testbed.IperfPort + 1

// Result is one loss rate's measurement. Goodputs are in bits/s.
type Result struct {
	Loss   float64
	Rounds int
	// Detached and Attached are each fixed algorithm's goodput with
	// mlbpf's program detached from the connections and attached to
	// them (iperf3 -C overriding, after connect, what mlbpf chose at
	// connect). Detached[defaultCC] ran without -C: the namespaces'
	// default, as a host without mlbpf has it.
	Detached, Attached map[string]Estimate
	// Cost is Attached/Detached per algorithm, paired by round: 1 when
	// being attached costs the connection nothing.
	Cost map[string]Estimate
	// Preset is the default algorithm set before connect by the
	// testbed's sender, attached/detached, paired by round: what being
	// attached costs a connection mlbpf skips. PresetDetached and
	// PresetAttached are its goodputs.
	Preset, PresetDetached, PresetAttached Estimate
	// BestCC is the algorithm with the highest detached goodput.
	BestCC string
	MLBPF  Estimate
	// VsDefault and VsBest are mlbpf against the detached default and
	// best algorithm, paired by round.
	VsDefault, VsBest Estimate
	// Target is the goal for VsBest's half width (0.05: ±5 %).
	Target float64
	// Modes counts the model's mode, sampled every 50 ms through the
	// measurement; LearnedAfter is the number of connections made until
	// it reached RECOMMENDATION (0: it did not).
	Modes        map[model.Mode]int
	LearnedAfter int
	// Chosen counts what mlbpf's iperf3 runs reported for their streams.
	Chosen map[string]int
}

// Default is the detached default's goodput.
func (r Result) Default() Estimate { return r.Detached[defaultCC] }

// Best is the best algorithm's detached goodput.
func (r Result) Best() Estimate { return r.Detached[r.BestCC] }

// Met says whether VsBest's interval is within the target.
func (r Result) Met() bool { return r.VsBest.HalfWidth() <= r.Target }

// Line formats r as the benchmark's summary line (goodputs in Mbit/s).
func (r Result) Line() string {
	learned := "-"
	if r.LearnedAfter > 0 {
		learned = fmt.Sprint(r.LearnedAfter)
	}
	met := "met"
	if !r.Met() {
		met = "not met"
	}
	return fmt.Sprintf("tcp loss=%g%% default_detached=%s default_attached=%s best=%s best_detached=%s best_attached=%s mlbpf=%s "+
		"vs_default=%s vs_best=%s (±%.1f%%, goal ±%g%%: %s) rounds=%d mode=%s learned_after=%s",
		r.Loss, r.Default().format(1e6, 0), r.Attached[defaultCC].format(1e6, 0), r.BestCC,
		r.Best().format(1e6, 0), r.Attached[r.BestCC].format(1e6, 0), r.MLBPF.format(1e6, 0),
		r.VsDefault.format(1, 2), r.VsBest.format(1, 2), 100*r.VsBest.HalfWidth(), 100*r.Target, met,
		r.Rounds, formatModes(r.Modes), learned)
}

// CostLine formats what being attached cost each algorithm's connections
// (attached/detached goodput, 1: nothing).
func (r Result) CostLine() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tcp attached/detached loss=%g%%", r.Loss)
	for _, a := range slices.Sorted(maps.Keys(r.Cost)) {
		fmt.Fprintf(&b, " %s=%s", a, r.Cost[a].format(1, 2))
	}
	fmt.Fprintf(&b, " skipped:%s=%s (set before connect: detached=%s attached=%s)", defaultCC, r.Preset.format(1, 2),
		r.PresetDetached.format(1e6, 0), r.PresetAttached.format(1e6, 0))
	return b.String()
}

// formatModes prints the share of each mode sampled, most seen first:
// "RECOMMENDATION:97%,COLLABORATION:3%".
func formatModes(m map[model.Mode]int) string {
	total := 0
	modes := make([]model.Mode, 0, len(m))
	for k, n := range m {
		total += n
		modes = append(modes, k)
	}
	if total == 0 {
		return "-"
	}
	sort.Slice(modes, func(i, j int) bool {
		if m[modes[i]] != m[modes[j]] {
			return m[modes[i]] > m[modes[j]]
		}
		return modes[i] > modes[j]
	})
	parts := make([]string, len(modes))
	for i, k := range modes {
		parts[i] = fmt.Sprintf("%v:%.0f%%", k, 100*float64(m[k])/float64(total))
	}
	return strings.Join(parts, ",")
}

// Cost is what the sock_ops program costs.
type Cost struct {
	// NsPerConn is the program's run time per connection (both of its
	// sockets are in the cgroup), NsPerCall per invocation, CallsPerConn
	// the invocations per connection.
	NsPerConn, NsPerCall, CallsPerConn float64
	// RateWith and RateWithout are connections per second attached
	// (model running) and detached; Ratio is with/without, paired by
	// round.
	RateWith, RateWithout, Ratio Estimate
}

// Line formats c as the benchmark's cost line.
func (c Cost) Line() string {
	return fmt.Sprintf("tcp sock_ops cost=%.0fns/connection (%.0fns/call, %.1f calls/connection) connect_rate with=%s/s without=%s/s ratio=%s",
		c.NsPerConn, c.NsPerCall, c.CallsPerConn, c.RateWith.format(1, 0), c.RateWithout.format(1, 0), c.Ratio.format(1, 3))
}

// Run builds a testbed, runs the benchmark and writes two lines per loss
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
	if err := tb.Outside(func() error { return tb.StartIperfPort(ctx, outsidePort) }); err != nil {
		return nil, Cost{}, err
	}
	avail, err := tcp.Available()
	if err != nil {
		return nil, Cost{}, err
	}
	var algs []string
	for _, a := range cfg.Algorithms {
		if slices.Contains(avail, a) {
			algs = append(algs, a)
		}
	}
	if !slices.Contains(algs, defaultCC) {
		return nil, Cost{}, fmt.Errorf("benchmarking tcp/cc: the default, %s, is not among the algorithms measured (%s) or the kernel lacks it", defaultCC, strings.Join(algs, ","))
	}

	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	var results []Result
	var rep *report.Collector
	if cfg.Report != "" {
		rep = &report.Collector{}
	}
	for _, loss := range cfg.Losses {
		if err := tb.SetLoss(loss); err != nil {
			return results, Cost{}, err
		}
		r, err := measureLoss(ctx, tb, cfg, algs, loss, rng, rep)
		if err != nil {
			return results, Cost{}, fmt.Errorf("measuring at %g%% loss: %w", loss, err)
		}
		log.Info("measured", "loss", loss, "line", r.Line(), "mlbpf_streams", r.Chosen)
		fmt.Fprintln(w, r.Line())
		fmt.Fprintln(w, r.CostLine())
		results = append(results, r)
	}
	if rep != nil {
		opt := report.Options{Title: "tcpbench: " + modelName + ", the daemon at each loss rate",
			Source: "written " + time.Now().UTC().Format(time.DateTime) + " UTC by the tcp/cc benchmark (make bench-tcp)"}
		if err := rep.WriteFile(cfg.Report, opt); err != nil {
			return results, Cost{}, err
		}
		log.Info("report written", "file", cfg.Report)
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

// mlbpf is a daemon running tcp/cc on the testbed's cgroup, with its own
// pin root, state directory and socket, removed by close.
type mlbpf struct {
	d       *daemon.Daemon
	report  func(stateDir string) // reads the history before it goes; nil: none
	cgroup  string
	pinRoot string
	dir     string
	stop    context.CancelFunc
	done    chan error
}

// modelName is the model the benchmark runs.
const modelName = "tcp/cc"

func startMLBPF(ctx context.Context, tb *testbed.Testbed, log *slog.Logger) (*mlbpf, error) {
	pinRoot, err := testbed.TempPinRoot("mlbpf-bench")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mlbpf-bench-")
	if err != nil {
		_ = os.RemoveAll(pinRoot)
		return nil, fmt.Errorf("creating a state directory: %w", err)
	}
	m := &mlbpf{cgroup: tb.Cgroup(), pinRoot: pinRoot, dir: dir}
	// A short period so that learning is quick, and a lease long enough
	// that a busy machine stalling the daemon (for seconds, at times, on
	// a shared 2-CPU host) does not make the model lose it.
	y := fmt.Sprintf(`
pin_root: %q
state_dir: %q
socket: %q
interval: 100ms
models:
  - name: %s
    mode: learning
    max_mode: recommendation
    lease: 5s
    tcp:
      cgroup: %q
      default: %s
`, pinRoot, filepath.Join(dir, "state"), filepath.Join(dir, "run", "agent.sock"), modelName, m.cgroup, defaultCC)
	c, err := config.Parse("tcpbench.yaml", []byte(y))
	if err == nil {
		m.d, err = daemon.New(daemon.Options{Config: c, Log: log, Version: "tcpbench"})
	}
	if err != nil {
		m.remove()
		return nil, fmt.Errorf("configuring the daemon: %w", err)
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.stop, m.done = cancel, make(chan error, 1)
	go func() { m.done <- m.d.Run(dctx) }()
	select {
	case <-m.d.Ready():
		return m, nil
	case err := <-m.done:
		cancel()
		m.remove()
		return nil, fmt.Errorf("starting the daemon: %w", err)
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), m.close())
	}
}

// mode is the model's mode as the daemon reports it.
func (m *mlbpf) mode() model.Mode {
	for _, mi := range m.d.Models() {
		if mi.Model == modelName {
			v, _ := model.ParseMode(mi.Mode)
			return v
		}
	}
	return model.ModeUnknown
}

// program opens the sock_ops program attached to the testbed's cgroup.
func (m *mlbpf) program() (*ebpf.Program, error) {
	f, err := os.Open(m.cgroup)
	if err != nil {
		return nil, fmt.Errorf("opening cgroup %s: %w", m.cgroup, err)
	}
	defer f.Close()
	q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupSockOps})
	if err != nil {
		return nil, fmt.Errorf("querying the sock_ops programs of %s: %w", m.cgroup, err)
	}
	if len(q.Programs) != 1 {
		return nil, fmt.Errorf("finding mlbpf's sock_ops program: %d programs attached to %s, want 1", len(q.Programs), m.cgroup)
	}
	p, err := ebpf.NewProgramFromID(q.Programs[0].ID)
	if err != nil {
		return nil, fmt.Errorf("opening sock_ops program %d: %w", q.Programs[0].ID, err)
	}
	return p, nil
}

// close stops the daemon and removes everything it left (pins, link,
// state): the next loss rate starts from nothing.
func (m *mlbpf) close() error {
	m.stop()
	err := <-m.done
	if m.report != nil {
		m.report(daemon.ModelStateDir(filepath.Join(m.dir, "state"), modelName))
	}
	err = errors.Join(err, daemon.Rollback(m.pinRoot, modelName))
	m.remove()
	return err
}

func (m *mlbpf) remove() {
	_ = os.RemoveAll(m.pinRoot)
	_ = os.RemoveAll(m.dir)
}

// arm is one way of running iperf3.
type arm struct {
	cc       string // -C; "" leaves the namespace's default
	outside  bool   // outside the testbed's cgroup
	mlbpf    bool
	label    string
	attached bool
	preset   bool // the testbed's sender, cc set before connect
}

func arms(algs []string) []arm {
	var out []arm
	for _, a := range algs {
		det := arm{cc: a, outside: true, label: a}
		if a == defaultCC {
			det.cc = "" // the host's default as a user has it
		}
		out = append(out, det, arm{cc: a, label: a, attached: true})
	}
	return append(out, arm{mlbpf: true, label: "mlbpf"},
		arm{cc: defaultCC, preset: true, outside: true, label: "preset"},
		arm{cc: defaultCC, preset: true, attached: true, label: "preset"})
}

// sinks starts two sinks in the server namespace: one in the testbed's
// cgroup, one outside it, whose accepted connections mlbpf does not see.
func sinks(tb *testbed.Testbed) (inside, outside *testbed.Sink, err error) {
	if inside, err = tb.NewSink(false); err != nil {
		return nil, nil, err
	}
	if err := tb.Outside(func() (err error) {
		outside, err = tb.NewSink(false)
		return err
	}); err != nil {
		_ = inside.Close()
		return nil, nil, err
	}
	return inside, outside, nil
}

// presetSend runs parallel connections of the testbed's sender for d to
// addr, each with cc set before connect, and returns their total
// goodput in bits/s.
func presetSend(ctx context.Context, tb *testbed.Testbed, addr, cc string, parallel int, d time.Duration) (float64, error) {
	var mu sync.Mutex
	var total float64
	var errs []error
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
			tr, err := tb.Send(sctx, addr, testbed.Load{Duration: d}, cc)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			total += 8 * tr.Goodput()
			errs = append(errs, err)
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

func measureLoss(ctx context.Context, tb *testbed.Testbed, cfg Config, algs []string, loss float64, rng *rand.Rand, rep *report.Collector) (Result, error) {
	r := Result{Loss: loss, Target: cfg.Target, Detached: map[string]Estimate{}, Attached: map[string]Estimate{},
		Cost: map[string]Estimate{}, Modes: map[model.Mode]int{}, Chosen: map[string]int{}}
	m, err := startMLBPF(ctx, tb, cfg.Logger)
	if err != nil {
		return r, err
	}
	if rep != nil {
		m.report = func(dir string) { rep.Add(fmt.Sprintf("%g %% loss", loss), dir, modelName) }
	}
	defer func() { _ = m.close() }()

	// Learning, from short connections, one at a time: the arms the
	// model compares never compete with each other.
	sink, outSink, err := sinks(tb)
	if err != nil {
		return r, err
	}
	defer sink.Close()
	defer outSink.Close()
	made := 0
	for ctx.Err() == nil && m.mode() != model.ModeRecommendation && made < cfg.MaxLearn {
		made++
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := tb.Send(tctx, sink.Addr(), cfg.Learn, "")
		cancel()
		if err != nil {
			return r, fmt.Errorf("learning: %w", err)
		}
	}
	if m.mode() == model.ModeRecommendation {
		r.LearnedAfter = made
	}
	// Let the daemon read the last records and settle.
	time.Sleep(300 * time.Millisecond)
	cfg.Logger.Info("learned", "loss", loss, "connections", made, "mode", m.mode())

	// The mode, through the measurement.
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			r.Modes[m.mode()]++
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		stopSampling()
		<-sampled
	}()

	all := arms(algs)
	runs := map[string][]float64{}
	key := func(a arm) string {
		if a.attached {
			return a.label + "_attached"
		}
		return a.label
	}
	start := time.Now()
	best := defaultCC
	for r.Rounds < cfg.MaxRounds {
		order := slices.Clone(all)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, a := range order {
			o := testbed.IperfOptions{Duration: cfg.RunDuration, Parallel: cfg.Parallel, CC: a.cc}
			var res testbed.IperfResult
			var err error
			if a.preset {
				send := func() (err error) {
					addr := sink.Addr()
					if a.outside {
						addr = outSink.Addr()
					}
					res.BitsPerSecond, err = presetSend(ctx, tb, addr, a.cc, cfg.Parallel, cfg.RunDuration)
					return err
				}
				if a.outside {
					err = tb.Outside(send)
				} else {
					err = send()
				}
			} else if a.outside {
				o.Port = outsidePort
				err = tb.Outside(func() error {
					res, err = tb.Iperf(ctx, o)
					return err
				})
			} else {
				res, err = tb.Iperf(ctx, o)
			}
			if err != nil {
				return r, err
			}
			runs[key(a)] = append(runs[key(a)], res.BitsPerSecond)
			if a.mlbpf {
				r.Chosen[res.CC]++
			}
		}
		r.Rounds++
		best = defaultCC
		for _, a := range algs {
			if meanCI(runs[a]).Value > meanCI(runs[best]).Value {
				best = a
			}
		}
		vs := ratioCI(runs["mlbpf"], runs[best])
		cfg.Logger.Debug("round", "loss", loss, "round", r.Rounds, "best", best, "vs_best", vs)
		if r.Rounds >= cfg.MinRounds && (vs.HalfWidth() <= cfg.Target || time.Since(start) > cfg.Budget) {
			break
		}
	}
	for _, a := range algs {
		r.Detached[a] = meanCI(runs[a])
		r.Attached[a] = meanCI(runs[a+"_attached"])
		r.Cost[a] = ratioCI(runs[a+"_attached"], runs[a])
	}
	r.PresetDetached, r.PresetAttached = meanCI(runs["preset"]), meanCI(runs["preset_attached"])
	r.Preset = ratioCI(runs["preset_attached"], runs["preset"])
	r.BestCC = best
	r.MLBPF = meanCI(runs["mlbpf"])
	r.VsDefault = ratioCI(runs["mlbpf"], runs[defaultCC])
	r.VsBest = ratioCI(runs["mlbpf"], runs[best])
	return r, nil
}

// measureCost measures the connection setup rate detached (outside the
// cgroup) and attached, in alternating rounds, then the program's run
// time per connection from the kernel's BPF statistics, in rounds of
// their own (the statistics cost time of their own).
func measureCost(ctx context.Context, tb *testbed.Testbed, cfg Config) (Cost, error) {
	var c Cost
	m, err := startMLBPF(ctx, tb, cfg.Logger)
	if err != nil {
		return c, err
	}
	defer func() { _ = m.close() }()
	inside, outside, err := sinks(tb)
	if err != nil {
		return c, err
	}
	defer inside.Close()
	defer outside.Close()

	var with, without []float64
	for i := range cfg.RateRounds {
		var on, off float64
		measure := func(out bool) error {
			if out {
				return tb.Outside(func() error {
					n, d, err := connectLoop(ctx, tb, outside.Addr(), cfg.RateRound)
					off = float64(n) / d.Seconds()
					return err
				})
			}
			n, d, err := connectLoop(ctx, tb, inside.Addr(), cfg.RateRound)
			on = float64(n) / d.Seconds()
			return err
		}
		// Alternate which goes first.
		if err := measure(i%2 == 0); err != nil {
			return c, err
		}
		if err := measure(i%2 != 0); err != nil {
			return c, err
		}
		with, without = append(with, on), append(without, off)
	}
	c.RateWith, c.RateWithout = meanCI(with), meanCI(without)
	c.Ratio = ratioCI(with, without)

	prog, err := m.program()
	if err != nil {
		return c, err
	}
	defer prog.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return c, fmt.Errorf("enabling BPF run time statistics: %w", err)
	}
	defer stats.Close()
	ns0, cnt0, err := progStats(prog)
	if err != nil {
		return c, err
	}
	n, _, err := connectLoop(ctx, tb, inside.Addr(), time.Second)
	if err != nil {
		return c, err
	}
	ns1, cnt1, err := progStats(prog)
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
