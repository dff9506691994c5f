// Package rabench is the storage/readahead benchmark (`make
// bench-readahead`): on the storage testbed, every fixed setting of the
// grid and mlbpf on the same workloads, in one run, each figure the mean
// of repeats with a 95 % confidence interval; then the collectors' and
// the daemon's cost against the same workload with mlbpf stopped.
package rabench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/readahead"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// Config configures a run. Zero fields take the defaults.
type Config struct {
	Workloads []testbed.Workload
	Grid      []uint32
	Repeats   int // measurements per fixed setting; default 3
	// LearnedRepeats is the measurements of mlbpf once it has learned,
	// each whole cycles of its time blocks (in RECOMMENDATION 20 s, one
	// block of them on the default; see cycleMeter); default 4.
	LearnedRepeats int
	Duration       time.Duration // one measurement of seq, random, mmap; default 3 s
	Phase          time.Duration // the most one phase of phased lasts; default 4 s
	// Disk is the testbed's disk; zero means DefaultDisk.
	Disk     testbed.Disk
	LearnMax time.Duration // most time mlbpf learns before it is measured; default 90 s
	// SkipOverhead leaves out the overhead line.
	SkipOverhead bool
	Logf         func(string, ...any)
}

func (c Config) withDefaults() Config {
	if c.Workloads == nil {
		c.Workloads = testbed.Workloads
	}
	if c.Grid == nil {
		c.Grid = readahead.DefaultGrid
	}
	if c.Repeats == 0 {
		c.Repeats = 3
	}
	if c.LearnedRepeats == 0 {
		c.LearnedRepeats = 4
	}
	if c.Duration == 0 {
		c.Duration = 3 * time.Second
	}
	if c.Phase == 0 {
		c.Phase = 4 * time.Second
	}
	if c.Disk.IsZero() {
		c.Disk = DefaultDisk
	}
	if c.LearnMax == 0 {
		c.LearnMax = 90 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

// DefaultDisk is the disk every workload runs on: a read costs 8 ms,
// 2 ms more if it does not follow the previous one, and its bytes at
// 40 MB/s, added as a real disk's costs are. Large readahead pays the
// 8 ms per request less often (sequential reads gain), small readahead
// reads fewer bytes around each page fault (mmap gains): the phases of
// phased disagree.
var DefaultDisk = testbed.Disk{Request: 8 * time.Millisecond, Seek: 2 * time.Millisecond, BPS: 40_000_000}

// Figure is a mean with the half-width of its 95 % confidence interval.
type Figure struct{ Mean, CI float64 }

func (f Figure) String() string { return fmt.Sprintf("%.2f±%.2f", f.Mean, f.CI) }

func figure(v []float64) Figure {
	n := float64(len(v))
	if n == 0 {
		return Figure{}
	}
	var s float64
	for _, x := range v {
		s += x
	}
	mean := s / n
	if n < 2 {
		return Figure{Mean: mean}
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	// Student's t for 95 %, two-sided.
	t := []float64{0, 12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26}
	q := 1.96
	if int(n-1) < len(t) {
		q = t[int(n-1)]
	}
	return Figure{Mean: mean, CI: q * math.Sqrt(ss/(n-1)/n)}
}

// Result is one workload's line.
type Result struct {
	Workload  testbed.Workload
	Default   Figure // MB/s at the device's own setting
	DefaultKB uint32
	BestKB    uint32
	Best      Figure
	Fixed     map[uint32]Figure
	MLBPF     Figure
	// OnModel and OnDefault are mlbpf's MB/s while its blocks had the
	// model's setting and the default (RECOMMENDATION's holdout,
	// COLLABORATION's control); DefaultShare is the time share on the
	// default. Not part of the figure's calculation: MLBPF is the whole
	// of each measurement.
	OnModel, OnDefault Figure
	DefaultShare       float64
	Mode               model.Mode
	// LearnedAfter is how long mlbpf took to reach RECOMMENDATION; < 0
	// if it did not before its measurements ended (above LearnMax: it
	// was promoted during them).
	LearnedAfter time.Duration
	Learned      map[string]uint32
}

// Line is the result in the benchmark's one-line format.
func (r Result) Line() string {
	learned := "-"
	if r.LearnedAfter >= 0 {
		learned = fmt.Sprintf("%.0f", r.LearnedAfter.Seconds())
	}
	return fmt.Sprintf("readahead workload=%s default=%s best=%d:%s mlbpf=%s vs_default=%.2f vs_best=%.2f mode=%v learned_after_s=%s on_model=%s on_default=%s default_share=%.3f",
		r.Workload, r.Default, r.BestKB, r.Best, r.MLBPF, r.MLBPF.Mean/r.Default.Mean, r.MLBPF.Mean/r.Best.Mean, r.Mode, learned,
		r.OnModel, r.OnDefault, r.DefaultShare)
}

// armFigures sets mlbpf's figures from its measurements: the whole of
// each, and its model and default blocks apart (a measurement with no
// time on an arm counts for neither of that arm's).
func (r *Result) armFigures(runs []learnedRun) {
	var all, onModel, onDefault []float64
	var total, def time.Duration
	for _, lr := range runs {
		all = append(all, lr.MBps)
		for arm, a := range lr.Arms {
			total += a.Elapsed
			switch arm {
			case model.ArmModel:
				onModel = append(onModel, a.MBps())
			case model.ArmControl:
				onDefault = append(onDefault, a.MBps())
				def += a.Elapsed
			}
		}
	}
	r.MLBPF, r.OnModel, r.OnDefault = figure(all), figure(onModel), figure(onDefault)
	if total > 0 {
		r.DefaultShare = def.Seconds() / total.Seconds()
	}
}

// Run runs the benchmark, writing each line to w as it is measured.
func Run(ctx context.Context, w io.Writer, cfg Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	old := testbed.PhaseLength
	testbed.PhaseLength = cfg.Phase
	defer func() { testbed.PhaseLength = old }()
	var out []Result
	for _, wl := range cfg.Workloads {
		r, err := measureWorkload(ctx, cfg, wl)
		if err != nil {
			return out, err
		}
		fmt.Fprintln(w, r.Line())
		var fixed []string
		for _, kb := range cfg.Grid {
			fixed = append(fixed, fmt.Sprintf("%d:%s", kb, r.Fixed[kb]))
		}
		cfg.Logf("readahead workload=%s fixed %s learned %v", wl, strings.Join(fixed, " "), r.Learned)
		out = append(out, r)
	}
	if cfg.SkipOverhead {
		return out, nil
	}
	c, err := measureOverhead(ctx, cfg)
	if err != nil {
		return out, err
	}
	fmt.Fprintln(w, c.Line())
	return out, nil
}

func (c Config) duration(wl testbed.Workload) time.Duration {
	return c.Duration // phased: whole cycles, at least one
}

func setKB(tb *testbed.Testbed, kb uint32) error {
	return os.WriteFile(tb.ReadAheadPath(), []byte(fmt.Sprint(kb)), 0)
}

func measureWorkload(ctx context.Context, cfg Config, wl testbed.Workload) (Result, error) {
	r := Result{Workload: wl, Fixed: map[uint32]Figure{}, LearnedAfter: -1}
	tb, err := testbed.New(ctx, testbed.Config{Disk: cfg.Disk})
	if err != nil {
		return r, err
	}
	defer tb.Close()
	dev, err := readahead.LookupDevice(tb.Name)
	if err != nil {
		return r, err
	}
	// The testbed gives its device the kernel's default for a new disk.
	r.DefaultKB, err = dev.ReadKB()
	if err != nil {
		return r, err
	}
	d := cfg.duration(wl)
	runs := map[uint32][]float64{}
	settings := slices.Clone(cfg.Grid)
	if !slices.Contains(settings, r.DefaultKB) {
		settings = append(settings, r.DefaultKB)
	}
	for range cfg.Repeats { // repeats outermost: drift spreads over every setting
		for _, kb := range settings {
			if err := setKB(tb, kb); err != nil {
				return r, err
			}
			st, err := tb.Run(ctx, wl, d, nil)
			if err != nil {
				return r, err
			}
			runs[kb] = append(runs[kb], st.MBps())
		}
	}
	for kb, v := range runs {
		r.Fixed[kb] = figure(v)
	}
	r.Default = r.Fixed[r.DefaultKB]
	for _, kb := range cfg.Grid {
		if r.BestKB == 0 || r.Fixed[kb].Mean > r.Best.Mean {
			r.BestKB, r.Best = kb, r.Fixed[kb]
		}
	}
	if err := setKB(tb, r.DefaultKB); err != nil {
		return r, err
	}

	// mlbpf: learn in COLLABORATION until promoted (or LearnMax), then
	// measure in the mode it reached, on the same workload.
	state, pinDir, cleanup, err := readahead.TempDirs()
	if err != nil {
		return r, err
	}
	defer cleanup()
	tu, err := readahead.New(readahead.Config{
		Devices: []string{tb.Name}, StateDir: state, PinDir: pinDir,
		Grid: cfg.Grid, Mode: model.ModeCollaboration,
		Controller: model.ControllerConfig{MinSamples: 20, Confidence: 0.95, MinEffect: 0.05},
		Logf:       cfg.Logf,
	})
	if err != nil {
		return r, err
	}
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tu.Run(tctx) }()
	stop := func() error {
		cancel()
		return <-done
	}
	start := time.Now()
	for time.Since(start) < cfg.LearnMax && tu.Mode() != model.ModeRecommendation {
		if _, err := tb.Run(ctx, wl, min(d, 2*time.Second), nil); err != nil {
			stop()
			return r, err
		}
		st := tu.Status()
		cfg.Logf("readahead workload=%s learning %.0fs: %s; learned %v", wl, time.Since(start).Seconds(), st.Evidence, st.Devices[0].Learned)
	}
	meter := cycleMeter{tb: tb, tu: tu, wl: wl, d: d}
	var learned []learnedRun
	for i := 0; len(learned) < cfg.LearnedRepeats && i < 3*cfg.LearnedRepeats; i++ {
		// Phased runs whole jobs past a cycle's end: every measurement of
		// it starts at a cycle's start anew. The others end where the next
		// cycle starts.
		if i == 0 || wl == testbed.Phased {
			if err := meter.start(ctx); err != nil {
				stop()
				return r, err
			}
		}
		mode := tu.Mode()
		lr, err := meter.measure(ctx)
		if err != nil {
			stop()
			return r, err
		}
		if !lr.Aligned {
			cfg.Logf("readahead workload=%s: measurement %d of mlbpf is not whole cycles (no new cycle began: mode %v)", wl, i, tu.Mode())
		}
		if now := tu.Mode(); now != mode {
			// A measurement across a change of mode (a promotion after
			// LearnMax) is of neither mode, the ones before it of the
			// old one: the line's figure is of the mode it names.
			cfg.Logf("readahead workload=%s: the mode changed from %v to %v during measurement %d of mlbpf: it and the %d before it are dropped", wl, mode, now, i, len(learned))
			learned = nil
			continue
		}
		learned = append(learned, lr)
	}
	r.armFigures(learned)
	r.Mode = tu.Mode()
	// Read after the measurements, as the mode is: a promotion after
	// LearnMax, during the measurements, shows as a time above it.
	if after, ok := tu.PromotedAfter(); ok {
		r.LearnedAfter = after
	}
	r.Learned = tu.Status().Devices[0].Learned
	if err := stop(); err != nil {
		return r, err
	}
	if kb, err := dev.ReadKB(); err != nil || kb != r.DefaultKB {
		return r, fmt.Errorf("after mlbpf stopped %s holds %d KB, want its original %d (%v)", tb.Name, kb, r.DefaultKB, err)
	}
	return r, nil
}

// Overhead is the collectors' and the daemon's cost.
type Overhead struct {
	NsPerIO      float64 // BPF run time per device read request
	NsPerEvent   float64 // BPF run time per program invocation
	EventsPerIO  float64
	DaemonCPU    Figure // the model's CPU seconds per second (its thread)
	With         Figure // MB/s with mlbpf in LEARNING (collecting, changing nothing)
	Without      Figure // MB/s with mlbpf stopped
	Workload     testbed.Workload
	RequestsSeen uint64
}

// Line is the overhead in the benchmark's format.
func (o Overhead) Line() string {
	return fmt.Sprintf("readahead overhead workload=%s collector=%.0fns/io (%.0fns/event, %.1f events/io) daemon_cpu=%s%% with=%s without=%s ratio=%.3f",
		o.Workload, o.NsPerIO, o.NsPerEvent, o.EventsPerIO, Figure{o.DaemonCPU.Mean * 100, o.DaemonCPU.CI * 100}, o.With, o.Without, o.With.Mean/o.Without.Mean)
}

// threadCPU returns the time thread tid of this process has run.
func threadCPU(tid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		return 0
	}
	var ns int64
	fmt.Sscanf(string(b), "%d", &ns)
	return time.Duration(ns)
}

// measureOverhead runs the random workload (the most I/O requests per
// byte) with mlbpf in LEARNING and stopped, alternating.
func measureOverhead(ctx context.Context, cfg Config) (Overhead, error) {
	o := Overhead{Workload: testbed.Random}
	tb, err := testbed.New(ctx, testbed.Config{Throttle: testbed.Throttle{ReadIOPS: 2000}})
	if err != nil {
		return o, err
	}
	defer tb.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return o, fmt.Errorf("enabling BPF run time statistics: %w", err)
	}
	defer stats.Close()
	state, pinDir, cleanup, err := readahead.TempDirs()
	if err != nil {
		return o, err
	}
	defer cleanup()
	var with, without, cpu []float64
	var runNs, runCnt, ios uint64
	for range cfg.Repeats {
		st, err := tb.Run(ctx, o.Workload, cfg.Duration, nil)
		if err != nil {
			return o, err
		}
		without = append(without, st.MBps())

		tu, err := readahead.New(readahead.Config{Devices: []string{tb.Name}, StateDir: state, PinDir: pinDir, Mode: model.ModeLearning, MaxMode: model.ModeLearning})
		if err != nil {
			return o, err
		}
		// The model runs on one thread of its own, so that its CPU time
		// is that thread's (the collectors run in the workload's).
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		tids := make(chan int, 1)
		go func() {
			runtime.LockOSThread()
			tids <- unix.Gettid()
			done <- tu.Run(tctx)
		}()
		tid := <-tids
		ns0, cnt0 := progRun(tu.Collector())
		c0 := threadCPU(tid)
		st, err = tb.Run(ctx, o.Workload, cfg.Duration, nil)
		c1 := threadCPU(tid)
		ns1, cnt1 := progRun(tu.Collector())
		cancel()
		if derr := <-done; err == nil {
			err = derr
		}
		if err != nil {
			return o, err
		}
		with = append(with, st.MBps())
		runNs, runCnt = runNs+ns1-ns0, runCnt+cnt1-cnt0
		ios += uint64(st.Ops)
		cpu = append(cpu, (c1-c0).Seconds()/st.Elapsed.Seconds())
	}
	o.With, o.Without, o.DaemonCPU = figure(with), figure(without), figure(cpu)
	if ios > 0 {
		o.NsPerIO = float64(runNs) / float64(ios)
		o.EventsPerIO = float64(runCnt) / float64(ios)
	}
	if runCnt > 0 {
		o.NsPerEvent = float64(runNs) / float64(runCnt)
	}
	o.RequestsSeen = ios
	return o, nil
}

func progRun(c *readahead.Collector) (ns, cnt uint64) {
	for _, p := range c.Programs() {
		st, err := p.Stats()
		if err != nil {
			continue
		}
		ns += uint64(st.Runtime)
		cnt += st.RunCount
	}
	return ns, cnt
}
