// Package rtobench measures tcp/rto on the two-path testbed (testbed.Paths):
// the flow completion time of short transfers with each grid setting fixed
// and with mlbpf choosing per destination after it has learned, plus the
// cost of the sock_ops program. `make bench-tcp-rto` runs it through
// cmd/rtobench.
//
// Arms compared are measured at the same time, each on its own
// destination prefix of the same path (testbed.Path.Dest: the same link,
// the same queue), so that the bloat path's drift (its queue's round trip
// moves with the background flow's saw-tooth) hits them alike: the fixed
// settings all at once in one slot of a round, mlbpf and the default at
// once in the other. Each p99 is pooled over the rounds; its interval,
// and the ratios', come from a block bootstrap whose blocks (consecutive
// flows of a slot) are drawn paired across the arms.
//
// The bloat path's background flow has its window capped, the cap moving
// on a saw-tooth (Config.BackgroundWindow): its queue stands deep and its
// round trip moves by hundreds of milliseconds, but it drops nothing, so
// that no arm's p99 is decided by how many of its flows met a drop at a
// full queue (1-2 % of them did, and waited a timeout, when the flow
// filled the queue: the p99 fell on one side or the other of that jump).
package rtobench

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/tcp/rto"
	"github.com/mlbpf/mlbpf/testbed"
)

// Config configures a run. Zero fields take the defaults.
type Config struct {
	// Flows is the number of flows on the bloat path of each fixed arm
	// in one round (default 80), mlbpf and the default measured beside
	// it get three times as many each (their comparison is the one the
	// goals are closest to). LossyFlows is the number of flows of each
	// arm on the lossy path in one round (default 36000). The lossy
	// path's p99s need that many: the best setting's distribution has a
	// cliff just above its p99 (1 % of its flows over 48 ms, 0.7 % over
	// 52 ms, then a sparse tail up to seconds), mlbpf's holdout runs
	// the default's timers, a fifth of whose flows take over 50 ms (at
	// 1 %, mlbpf's p99 sat at its setting's p99.2, about 0.92 of the best
	// arm's; the learner now narrows it to about 1 ‰: Learner.Holdout), and a
	// few tens of flows more above the cliff move it by tens of ms. Drawn from two runs' 24000 flows of the best setting
	// and 48000 of the default, 6000 flows per arm and round gave an
	// interval of vs_best 0.19 wide (its low end above 0.9 in one run of
	// five), 36000 about 0.07. Repeats is the number of rounds
	// (default 2), Bytes one flow's transfer (default 64 KiB).
	Flows, LossyFlows, Repeats int
	Bytes                      int64
	// Workers are the flows in flight per path (default 64 on lossy, 12
	// on bloat, whose flows take seconds), shared by the arms measured
	// at once. The lossy path's flows mostly wait on their timers: at
	// 64 in flight they went out three times as fast as at 16, and the
	// best setting's distribution above 2 ms was the same (its p99 50.6
	// against 49.6 ms, 12000 and 6000 flows), only the flows without a
	// loss 0.03 ms slower.
	LossyWorkers, BloatWorkers int
	// Settings are the fixed arms measured (default rto.Grid, at most
	// testbed.MaxDestinations).
	Settings []rto.Setting
	// LossPercent is the lossy path's loss each way (default 5).
	LossPercent float64
	// NoTimestamps turns TCP timestamps off on the client
	// (testbed.PathsConfig.NoTimestamps).
	NoTimestamps bool
	// BackgroundWindow caps the bloat path's background flow's window
	// (testbed.PathsConfig.BackgroundWindowBytes; default 600000: up to
	// 240 ms of queue at 20 Mbit/s), moving along a saw-tooth of period
	// BackgroundPeriod (default 10 s) from a third of it up to it, and
	// BloatLimit is the queue (default 3000000), so that the path drops
	// nothing: its round trip varies with the saw-tooth and the other
	// flows. A negative BackgroundWindow: no cap, the background flow
	// fills the queue (1 MB) and drops there, and the p99 of every
	// setting sits where 1-2 % of the flows wait a timeout for a drop.
	BackgroundWindow, BloatLimit int
	BackgroundPeriod             time.Duration
	// BackgroundJump: the cap jumps up at the start of each period and
	// falls over it (testbed.PathsConfig.BackgroundWindowJump), so the
	// round trip jumps.
	BackgroundJump bool
	// Dump, if set, gets every measured flow as a CSV line (see
	// dumpHeader).
	Dump   io.Writer
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Flows == 0 {
		c.Flows = 80
	}
	if c.LossyFlows == 0 {
		c.LossyFlows = 36000
	}
	if c.Repeats == 0 {
		c.Repeats = 2
	}
	if c.Bytes == 0 {
		c.Bytes = 64 << 10
	}
	if c.LossyWorkers == 0 {
		c.LossyWorkers = 64
	}
	if c.BloatWorkers == 0 {
		c.BloatWorkers = 12
	}
	if len(c.Settings) == 0 {
		c.Settings = rto.Grid
	}
	if c.LossPercent == 0 {
		c.LossPercent = 5
	}
	if c.BackgroundWindow == 0 {
		c.BackgroundWindow = 600000
	}
	if c.BloatLimit == 0 && c.BackgroundWindow > 0 {
		c.BloatLimit = 3000000
	}
	if c.BackgroundPeriod == 0 {
		c.BackgroundPeriod = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

var paths = []testbed.Path{testbed.PathLossy, testbed.PathBloat}

// env is one run's testbed and model objects: o attaches the program
// for the whole run and the period loops (run) adopt its link, each with
// its own program, and share its maps. Each path has a destination per
// fixed arm (at least two), all behind the same link and queue: the arms
// of a slot run at the same time, each on its own destination prefix.
type env struct {
	cfg   Config
	tb    *testbed.Paths
	o     *rto.Objects
	sinks map[testbed.Path][]*testbed.Sink
	pins  string
	// progNs and progRuns add up the run time and runs of the loops'
	// programs (each loop's objects replace the program in the link).
	progNs, progRuns uint64
}

func setup(ctx context.Context, cfg Config) (*env, error) {
	e := &env{cfg: cfg, sinks: map[testbed.Path][]*testbed.Sink{}}
	dests := max(len(cfg.Settings), 2)
	if dests > testbed.MaxDestinations {
		return nil, fmt.Errorf("%d settings: at most %d are measured at once", len(cfg.Settings), testbed.MaxDestinations)
	}
	var err error
	if e.pins, err = testbed.TempPinRoot("mlbpf-rtobench"); err != nil {
		return nil, err
	}
	if e.tb, err = testbed.NewPaths(ctx, testbed.PathsConfig{LossPercent: cfg.LossPercent, Cgroup: true,
		NoTimestamps: cfg.NoTimestamps, Destinations: dests,
		BackgroundWindowBytes: uint32(max(cfg.BackgroundWindow, 0)), BackgroundWindowPeriod: cfg.BackgroundPeriod,
		BackgroundWindowJump: cfg.BackgroundJump,
		BloatLimitBytes:      uint32(max(cfg.BloatLimit, 0))}); err != nil {
		e.close()
		return nil, err
	}
	// The queue fills in a few seconds; a little more lets the
	// background flow reach its steady saw-tooth.
	rtt, err := e.tb.WaitBloated(ctx, 150*time.Millisecond, 30*time.Second)
	if err != nil {
		e.close()
		return nil, err
	}
	time.Sleep(5 * time.Second)
	rtt, _ = e.tb.BackgroundRTT()
	cfg.Logger.Info("bloat path queue standing", "background_rtt", rtt)
	for _, p := range paths {
		for i := range dests {
			sink, err := e.tb.NewSinkAt(p, i, false)
			if err != nil {
				e.close()
				return nil, err
			}
			e.sinks[p] = append(e.sinks[p], sink)
		}
	}
	if e.o, err = rto.Open(rto.Config{PinRoot: e.pins, Cgroup: e.tb.Cgroup()}); err != nil {
		e.close()
		return nil, err
	}
	if err := e.o.Attach(); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() error {
	var errs []error
	if e.o != nil {
		errs = append(errs, e.o.Remove())
	}
	for _, ss := range e.sinks {
		for _, s := range ss {
			_ = s.Close()
		}
	}
	if e.tb != nil {
		errs = append(errs, e.tb.Close())
	}
	if e.pins != "" {
		errs = append(errs, os.RemoveAll(e.pins))
	}
	return errors.Join(errs...)
}

// load is how many flows a slot sends to each destination of each path.
type load map[testbed.Path][]int

// flows sends n[p][i] flows to path p's i-th destination, each path's
// workers in flight at a time, both paths at once. A path's destinations
// take turns (flow k of each goes out about when flow k of the others
// does), so that arms measured in one slot see the path alike.
func (e *env) flows(ctx context.Context, n load) error {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, p := range paths {
		workers := e.cfg.LossyWorkers
		if p == testbed.PathBloat {
			workers = e.cfg.BloatWorkers
		}
		var jobs []int
		for k := 0; ; k++ {
			more := false
			for dest, m := range n[p] {
				if k < m {
					jobs, more = append(jobs, dest), true
				}
			}
			if !more {
				break
			}
		}
		next := make(chan int, len(jobs))
		for _, j := range jobs {
			next <- j
		}
		close(next)
		for range workers {
			wg.Go(func() {
				for dest := range next {
					fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
					_, err := e.tb.Send(fctx, e.sinks[p][dest].Addr(), testbed.Load{Bytes: e.cfg.Bytes})
					cancel()
					if err != nil && ctx.Err() == nil {
						select {
						case errs <- fmt.Errorf("%s flow: %w", p, err):
						default:
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Single flows may fail under 5 % loss both ways (a SYN retried to
	// exhaustion is not expected, but a reset is possible): count them,
	// the record still has their time.
	var n2 int
	for range errs {
		n2++
	}
	if n2 > 0 {
		e.cfg.Logger.Warn("flows failed", "count", n2)
	}
	return nil
}

// destOf is the path and destination a peer address is.
func (e *env) destOf(a netip.Addr) (testbed.Path, int, bool) {
	for _, p := range paths {
		for i := range e.sinks[p] {
			if d := p.Dest(i); d.Prefix.Contains(a) || d.Prefix6.Contains(a) {
				return p, i, true
			}
		}
	}
	return "", 0, false
}

// Stats summarises flows of one arm on one path.
type Stats struct {
	N                   int
	Mean, P50, P90, P99 float64 // ms
	SynRetrans, Retrans float64 // per flow
	DSACKs, Timeouts    float64
	NotDone             int
}

func summarize(fs []rto.Flow) Stats {
	s := Stats{N: len(fs)}
	if len(fs) == 0 {
		return s
	}
	ms := make([]float64, len(fs))
	for i, f := range fs {
		ms[i] = float64(f.FCT) / 1e6
		s.Mean += ms[i]
		s.SynRetrans += float64(f.SynRetrans)
		s.Retrans += float64(f.Retrans)
		s.DSACKs += float64(f.DSACKs)
		s.Timeouts += float64(f.Timeouts)
		if !f.Done {
			s.NotDone++
		}
	}
	n := float64(len(fs))
	s.Mean /= n
	s.SynRetrans /= n
	s.Retrans /= n
	s.DSACKs /= n
	s.Timeouts /= n
	slices.Sort(ms)
	s.P50, s.P90, s.P99 = pct(ms, 0.5), pct(ms, 0.9), pct(ms, 0.99)
	return s
}

// dumpHeader names the columns of Config.Dump's lines: the round, the
// slot ("fixed", "mlbpf" or "survey"), the path, the arm measured (a
// setting, or "mlbpf"), the flow's place among its arm's flows of the
// slot, then its record.
const dumpHeader = "round,slot,path,arm,seq,fct_ms,done,syn_retrans,retrans,timeouts,dsacks,model_arm,setting,srtt_ms"

// dump writes flows of one arm to cfg.Dump, if set.
func (e *env) dump(round int, slot string, p testbed.Path, arm string, fs []rto.Flow) {
	if e.cfg.Dump == nil {
		return
	}
	w := csv.NewWriter(e.cfg.Dump)
	for i, f := range fs {
		_ = w.Write([]string{fmt.Sprint(round), slot, string(p), arm, fmt.Sprint(i),
			fmt.Sprintf("%.3f", float64(f.FCT)/1e6), fmt.Sprint(f.Done), fmt.Sprint(f.SynRetrans), fmt.Sprint(f.Retrans),
			fmt.Sprint(f.Timeouts), fmt.Sprint(f.DSACKs), f.Arm.String(), f.Setting.String(), fmt.Sprintf("%.3f", float64(f.SRTT)/1e6)})
	}
	w.Flush()
}

// pct is the q-quantile of sorted xs (nearest rank).
func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// fixed measures every setting at once on both paths, the i-th on each
// path's i-th destination, lossy and bloat flows each: every flow gets
// its destination's setting (holdout 0), or the kernel's defaults for
// rto.Default (no recommendation). It returns each setting's flows by
// path.
func (e *env) fixed(ctx context.Context, settings []rto.Setting, lossy, bloat int) (map[testbed.Path][][]rto.Flow, error) {
	recs := map[netip.Prefix][]rto.Setting{}
	n := load{}
	for _, p := range paths {
		n[p] = make([]int, len(e.sinks[p]))
		for i, s := range settings {
			if s != rto.Default {
				recs[p.Dest(i).Prefix] = []rto.Setting{s}
			}
			n[p][i] = bloat
			if p == testbed.PathLossy {
				n[p][i] = lossy
			}
		}
	}
	return e.measure(ctx, recs, fixedOptions, n)
}

// fixedOptions run every flow with the setting recommended, or on the
// kernel's defaults where none is: COLLABORATION with all of them drawing
// the candidate (RECOMMENDATION would keep a holdout on the defaults).
var fixedOptions = model.Options{
	InitialMode: model.ModeCollaboration, MaxMode: model.ModeCollaboration, CollabPermille: model.Permille,
}

// measure writes recs (every destination's prefix not in it withdrawn),
// runs the model on its period loop with opts (an external learner: the
// built-in one's recommendations are not applied, nor its mode), sends
// the flows n and returns their records, as the loop decoded them and in
// the order it did, by path and destination.
func (e *env) measure(ctx context.Context, recs map[netip.Prefix][]rto.Setting, opts model.Options, n load) (map[testbed.Path][][]rto.Flow, error) {
	for _, p := range paths {
		for i := range e.sinks[p] {
			pfx := p.Dest(i).Prefix
			var err error
			if s, ok := recs[pfx]; ok {
				err = e.o.Write(pfx, s)
			} else {
				err = e.o.Withdraw(pfx)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	opts.SleepTimeout = rto.DefaultOptions().SleepTimeout
	opts.Lease = time.Hour
	var mu sync.Mutex
	var out map[testbed.Path][][]rto.Flow // nil: before the flows
	err := e.run(ctx, pipeline.Env{Options: opts, External: true}, nil, func(f *rto.Flow) {
		mu.Lock()
		defer mu.Unlock()
		if p, i, ok := e.destOf(f.Peer); ok && out != nil {
			out[p][i] = append(out[p][i], *f)
		}
	}, func(ctx context.Context, loop *pipeline.Loop) error {
		defer func() {
			if m := loop.Model().Mode(); m != opts.InitialMode {
				e.cfg.Logger.Warn("the mode changed while measuring", "mode", m, "want", opts.InitialMode)
			}
		}()
		time.Sleep(2 * rto.DefaultOptions().SleepTimeout) // what came before
		mu.Lock()
		out = map[testbed.Path][][]rto.Flow{}
		for _, p := range paths {
			out[p] = make([][]rto.Flow, len(e.sinks[p]))
		}
		mu.Unlock()
		if err := e.flows(ctx, n); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond) // the last records in
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	return out, err
}

// run runs tcp/rto on its period loop (the daemon's), on the testbed's
// cgroup, its learner's grid grid (nil: rto.Grid), with fn seeing every decoded flow, while do runs; when do
// returns, the loop stops (its model STOPPED: the kernel on its
// defaults), the records that came meanwhile seen.
func (e *env) run(ctx context.Context, env pipeline.Env, grid []rto.Setting, fn func(*rto.Flow), do func(context.Context, *pipeline.Loop) error) error {
	env.Model, env.PinRoot = rto.ModelName, e.pins
	sec := &rto.SectionConfig{Cgroup: e.tb.Cgroup(), Grid: grid}
	if err := sec.Validate(); err != nil {
		return err
	}
	loop, err := rto.Subsystem().Open(env, sec)
	if err != nil {
		return err
	}
	defer loop.Close()
	o := loop.Objects().(*rto.Objects)
	o.Learner().OnFlow(fn)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(rctx) }()
	err = do(rctx, loop)
	stop()
	err = errors.Join(err, <-runErr)
	// The program the loop attached (Start), until the next loop's.
	ns, runs, serr := progStats(o.Program())
	e.progNs += ns
	e.progRuns += runs
	return errors.Join(err, serr)
}

// Survey measures every configured setting once on both paths, all at
// once (each on its own destination), and prints one line per setting and
// path: the knob survey.
func Survey(ctx context.Context, w io.Writer, cfg Config) error {
	lossySet := cfg.LossyFlows != 0
	cfg = cfg.withDefaults()
	if !lossySet {
		cfg.LossyFlows = 5 * cfg.Flows // a survey needs fewer
	}
	for _, s := range cfg.Settings {
		if err := s.Validate(rto.KernelHZ()); err != nil {
			return err
		}
	}
	e, err := setup(ctx, cfg)
	if err != nil {
		return err
	}
	defer e.close()
	res, err := e.fixed(ctx, cfg.Settings, cfg.LossyFlows, cfg.Flows)
	if err != nil {
		return err
	}
	if cfg.Dump != nil {
		fmt.Fprintln(cfg.Dump, dumpHeader)
	}
	for _, p := range paths {
		for i, s := range cfg.Settings {
			e.dump(0, "survey", p, s.String(), res[p][i])
			st := summarize(res[p][i])
			fmt.Fprintf(w, "tcprto survey path=%s setting=%s flows=%d mean_ms=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f syn_retrans=%.2f retrans=%.2f rto_timeouts=%.2f dsacks=%.2f not_done=%d\n",
				p, s, st.N, st.Mean, st.P50, st.P90, st.P99, st.SynRetrans, st.Retrans, st.Timeouts, st.DSACKs, st.NotDone)
		}
	}
	arms, _ := e.o.ArmCounts()
	fmt.Fprintf(w, "tcprto survey arms=%v\n", arms)
	return nil
}
