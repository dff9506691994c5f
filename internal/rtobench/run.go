package rtobench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/tcp/rto"
	"github.com/mlbpf/mlbpf/testbed"
)

// Interval is an estimate with the half-width of its 95 % confidence
// interval (a p99 and its block-bootstrap interval, see bootstrap).
type Interval struct{ Mean, Half float64 }

// Ratio is a ratio of two p99s with its 95 % confidence interval.
type Ratio struct{ Mean, Low, High float64 }

// String formats r as "2.50[1.90,3.29]".
func (r Ratio) String() string { return fmt.Sprintf("%.2f[%.2f,%.2f]", r.Mean, r.Low, r.High) }

func (i Interval) fmt(prec int) string {
	return fmt.Sprintf("%.*f±%.*f", prec, i.Mean, prec, i.Half)
}

// blocks are one arm's flow completion times (ms) cut into consecutive
// blocks, in the order the loop decoded them, blocks·rounds in all. Arms
// measured at once (one slot) have their k-th blocks at about the same
// time; block k of round r of one arm is paired with block k of round r
// of another.
type blocks [][]float64

// besideFactor is how many times a fixed arm's bloat-path flows mlbpf
// and the default beside it get per round (on the lossy path as many).
const besideFactor = 3

// blocksPerSlot is how many blocks each arm's flows of one slot are cut
// into for the bootstrap.
const blocksPerSlot = 20

// add cuts one slot's flows into blocksPerSlot blocks and appends them.
func (b *blocks) add(fs []rto.Flow) {
	for k := range blocksPerSlot {
		lo, hi := k*len(fs)/blocksPerSlot, (k+1)*len(fs)/blocksPerSlot
		ms := make([]float64, 0, hi-lo)
		for _, f := range fs[lo:hi] {
			ms = append(ms, float64(f.FCT)/1e6)
		}
		*b = append(*b, ms)
	}
}

// p99 is the p99 of the flows of the blocks idx (all blocks if nil),
// pooled.
func (b blocks) p99(idx []int, buf []float64) float64 {
	buf = buf[:0]
	if idx == nil {
		for _, x := range b {
			buf = append(buf, x...)
		}
	} else {
		for _, i := range idx {
			buf = append(buf, b[i]...)
		}
	}
	slices.Sort(buf)
	return pct(buf, 0.99)
}

// tailCut is the quantile of an arm's flows below which the bootstrap
// only counts them (tail).
const tailCut = 0.95

// tail is an arm's blocks prepared for the bootstrap's resamples: the
// p99 of a resample is its flows' rank ⌈0.99·n⌉, which lies among the
// flows at or above the arm's pooled tailCut quantile unless the
// resample's blocks are far slower than the arm's, so each block keeps
// those flows and only the count of the others. A resample's p99 then
// sorts about a twentieth of its flows, not all of them (on the lossy
// path, tens of thousands per arm and 2000 resamples), and is the same
// number.
type tail struct {
	b     blocks
	cut   float64
	below []int       // per block, flows below cut
	above [][]float64 // per block, the flows at or above cut
}

func newTail(b blocks) *tail {
	t := &tail{b: b, below: make([]int, len(b)), above: make([][]float64, len(b))}
	var all []float64
	for _, x := range b {
		all = append(all, x...)
	}
	if len(all) == 0 {
		return t
	}
	slices.Sort(all)
	t.cut = pct(all, tailCut)
	for i, x := range b {
		for _, v := range x {
			if v < t.cut {
				t.below[i]++
			} else {
				t.above[i] = append(t.above[i], v)
			}
		}
	}
	return t
}

// p99 is blocks.p99 of the blocks idx, buf its scratch space.
func (t *tail) p99(idx []int, buf *[]float64) float64 {
	n, below := 0, 0
	for _, i := range idx {
		n += len(t.b[i])
		below += t.below[i]
	}
	if n == 0 {
		return math.NaN()
	}
	r := min(max(int(math.Ceil(0.99*float64(n)))-1, 0), n-1)
	if r < below { // the p99 is below cut: all the flows
		*buf = (*buf)[:0]
		for _, i := range idx {
			*buf = append(*buf, t.b[i]...)
		}
		slices.Sort(*buf)
		return (*buf)[r]
	}
	*buf = (*buf)[:0]
	for _, i := range idx {
		*buf = append(*buf, t.above[i]...)
	}
	slices.Sort(*buf)
	return (*buf)[r-below]
}

// bootstrapRounds is the number of resamples of the block bootstrap.
const bootstrapRounds = 2000

// bootstrap resamples the blocks of arms measured over the same rounds
// (a block bootstrap over consecutive flows, kept paired: one draw of block
// indices serves every arm, so that drift common to the arms of a slot
// cancels in their ratio) and returns stat's point estimate and its 95 %
// percentile interval. stat gets each arm's pooled p99.
func bootstrap(arms []blocks, stat func(p99 []float64) float64) (est, lo, hi float64) {
	n := len(arms[0])
	for _, a := range arms {
		n = min(n, len(a))
	}
	p := make([]float64, len(arms))
	var buf []float64
	tails := make([]*tail, len(arms))
	for i, a := range arms {
		p[i] = a[:n].p99(nil, buf)
		tails[i] = newTail(a[:n])
	}
	est = stat(p)
	if n < 2 {
		return est, math.NaN(), math.NaN()
	}
	rng := rand.New(rand.NewPCG(1, 2)) // the same resamples every run
	idx := make([]int, n)
	draws := make([]float64, 0, bootstrapRounds)
	for range bootstrapRounds {
		for j := range idx {
			idx[j] = rng.IntN(n)
		}
		for i, t := range tails {
			p[i] = t.p99(idx, &buf)
		}
		if v := stat(p); !math.IsNaN(v) && !math.IsInf(v, 0) {
			draws = append(draws, v)
		}
	}
	slices.Sort(draws)
	return est, pct(draws, 0.025), pct(draws, 0.975)
}

// p99Interval is an arm's pooled p99 with the half-width of its
// bootstrap interval.
func p99Interval(b blocks) Interval {
	est, lo, hi := bootstrap([]blocks{b}, func(p []float64) float64 { return p[0] })
	return Interval{Mean: est, Half: (hi - lo) / 2}
}

// p99Ratio is num's pooled p99 over den's, with its paired bootstrap
// interval.
func p99Ratio(num, den blocks) Ratio {
	est, lo, hi := bootstrap([]blocks{num, den}, func(p []float64) float64 { return p[0] / p[1] })
	return Ratio{Mean: est, Low: lo, High: hi}
}

// PathResult is one path's figures.
type PathResult struct {
	Path testbed.Path
	// Flows is the number of flows the default's and mlbpf's p99 are
	// each over (all rounds); a fixed arm has as many on the lossy path,
	// 1/besideFactor as many on the bloat path.
	Flows int
	// Fixed are the fixed arms' flows, measured at once; Default and
	// MLBPF the default's and mlbpf's, measured at once in another slot
	// of each round.
	Fixed          map[rto.Setting]blocks
	Default, MLBPF blocks
	// DefaultP99, BestP99 and MLBPFP99 are pooled p99s (ms) with their
	// bootstrap intervals: the default's beside mlbpf, the best fixed
	// arm's.
	DefaultP99, BestP99, MLBPFP99 Interval
	Best                          rto.Setting
	// Speedup is the default's p99 over mlbpf's (measured at once) and
	// VsBest the best fixed arm's over mlbpf's (in the same rounds),
	// with paired block-bootstrap intervals.
	Speedup, VsBest Ratio
	Mode            model.Mode
	LearnedAfter    int
	Chosen          rto.Setting
	// HoldoutPermille is RECOMMENDATION's holdout mlbpf was measured
	// with: the learner's (rto.Learner.Holdout), as the daemon's loop sets
	// it, at most the model's configured share.
	HoldoutPermille uint32
	// Survey keeps each fixed arm's summary over all rounds, and
	// Beside the default's and mlbpf's.
	Survey                map[rto.Setting]Stats
	BesideDef, BesideMLBP Stats
}

// Line formats r as the benchmark's line for its path.
func (r PathResult) Line() string {
	learned := "-"
	if r.LearnedAfter > 0 {
		learned = fmt.Sprint(r.LearnedAfter)
	}
	return fmt.Sprintf("tcprto path=%s flows=%d default_p99_ms=%s best=%s:%s mlbpf_p99_ms=%s speedup=%s vs_best=%s mode=%v learned_after=%s chosen=%s holdout_permille=%d",
		r.Path, r.Flows, r.DefaultP99.fmt(0), r.Best, r.BestP99.fmt(0), r.MLBPFP99.fmt(0), r.Speedup, r.VsBest,
		r.Mode, learned, r.Chosen, r.HoldoutPermille)
}

// Cost is the sock_ops programs' run time.
type Cost struct {
	RTONsPerCall, RTOCallsPerConn float64
	CCNsPerCall, CCCallsPerConn   float64
	CCErr                         error
}

// Line formats c as the benchmark's cost line.
func (c Cost) Line() string {
	cc := fmt.Sprintf("tcp_cc=%.0fns/call (%.1f calls/connection)", c.CCNsPerCall, c.CCCallsPerConn)
	if c.CCErr != nil {
		cc = "tcp_cc=- (" + c.CCErr.Error() + ")"
	}
	return fmt.Sprintf("tcprto sock_ops cost=%.0fns/call (%.1f calls/connection) %s",
		c.RTONsPerCall, c.RTOCallsPerConn, cc)
}

// Run lets one model learn both paths at once, then measures, Repeats
// rounds, in two slots per round whose order alternates: every grid
// setting fixed, all at once (each on its own destination of each path),
// and mlbpf after learning (its recommendations, RECOMMENDATION, its
// holdout included) at once with the default on another destination of
// the same paths. It prints one line per setting and path, one line per
// path and a cost line.
func Run(ctx context.Context, w io.Writer, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	e, err := setup(ctx, cfg)
	if err != nil {
		return err
	}
	defer e.close()
	drops0, _ := e.tb.BloatDrops()
	rtts := sampleRTT(ctx, e.tb)

	res := map[testbed.Path]*PathResult{}
	for _, p := range paths {
		n := besideFactor * cfg.Flows
		if p == testbed.PathLossy {
			n = cfg.LossyFlows
		}
		res[p] = &PathResult{Path: p, Flows: n * cfg.Repeats, Fixed: map[rto.Setting]blocks{}, Survey: map[rto.Setting]Stats{}}
	}

	// Learning: one model, both paths at once, from an empty map, on
	// each path's first destination.
	learned, mode, holdout, err := learn(ctx, e, res)
	if err != nil {
		return err
	}
	for pfx, ss := range learned {
		if len(ss) > 1 {
			log.Warn("a prefix still explores: mlbpf is measured exploring it", "prefix", pfx, "settings", ss)
		}
	}

	// The program's cost is measured meanwhile, with tcp/cc running on
	// the same cgroup.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enabling BPF run time statistics: %w", err)
	}
	defer stats.Close()
	ccProg, ccClose, ccErr := startCC(e)
	if ccClose != nil {
		defer ccClose()
	}
	cost := Cost{CCErr: ccErr}
	e.progNs, e.progRuns = 0, 0
	var cc0, ccN uint64
	if ccProg != nil {
		cc0, ccN, _ = progStats(ccProg)
	}
	all := map[testbed.Path]map[rto.Setting][]rto.Flow{}
	besideDef, besideMLBPF := map[testbed.Path][]rto.Flow{}, map[testbed.Path][]rto.Flow{}
	for _, p := range paths {
		all[p] = map[rto.Setting][]rto.Flow{}
	}
	conns := 0
	if cfg.Dump != nil {
		fmt.Fprintln(cfg.Dump, dumpHeader)
	}
	for rep := range cfg.Repeats {
		for k := range 2 {
			if (k+rep)%2 == 0 {
				out, err := e.fixed(ctx, cfg.Settings, cfg.LossyFlows, cfg.Flows)
				if err != nil {
					return err
				}
				conns += len(cfg.Settings) * (cfg.LossyFlows + cfg.Flows)
				for _, p := range paths {
					for i, s := range cfg.Settings {
						b := res[p].Fixed[s]
						b.add(out[p][i])
						res[p].Fixed[s] = b
						all[p][s] = append(all[p][s], out[p][i]...)
						e.dump(rep, "fixed", p, s.String(), out[p][i])
						st := summarize(out[p][i])
						log.Info("fixed", "round", rep, "path", p, "setting", s, "flows", st.N, "p50", st.P50, "p99", st.P99)
					}
				}
				continue
			}
			// mlbpf on each path's first destination (the one it
			// learned), the default beside it on the second.
			nl, nb := cfg.LossyFlows, besideFactor*cfg.Flows
			n := load{testbed.PathLossy: {nl, nl}, testbed.PathBloat: {nb, nb}}
			out, err := e.measure(ctx, learned, model.Options{
				InitialMode: model.ModeRecommendation, MaxMode: model.ModeRecommendation,
				HoldoutPermille: holdout,
			}, n)
			if err != nil {
				return err
			}
			conns += 2 * (nl + nb)
			for _, p := range paths {
				r := res[p]
				r.MLBPF.add(out[p][0])
				r.Default.add(out[p][1])
				besideMLBPF[p] = append(besideMLBPF[p], out[p][0]...)
				besideDef[p] = append(besideDef[p], out[p][1]...)
				e.dump(rep, "mlbpf", p, "mlbpf", out[p][0])
				e.dump(rep, "mlbpf", p, rto.Default.String(), out[p][1])
				m, d := summarize(out[p][0]), summarize(out[p][1])
				log.Info("mlbpf", "round", rep, "path", p, "flows", m.N, "p50", m.P50, "p99", m.P99, "default_p50", d.P50, "default_p99", d.P99)
			}
		}
	}
	if e.progRuns > 0 {
		cost.RTONsPerCall = float64(e.progNs) / float64(e.progRuns)
		cost.RTOCallsPerConn = float64(e.progRuns) / float64(conns)
	}
	if ccProg != nil {
		cc1, ccN1, _ := progStats(ccProg)
		if ccN1 > ccN {
			cost.CCNsPerCall = float64(cc1-cc0) / float64(ccN1-ccN)
			cost.CCCallsPerConn = float64(ccN1-ccN) / float64(conns)
		}
	}
	for _, p := range paths {
		r := res[p]
		r.Mode = mode
		for _, s := range cfg.Settings {
			r.Survey[s] = summarize(all[p][s])
		}
		r.BesideDef, r.BesideMLBP = summarize(besideDef[p]), summarize(besideMLBPF[p])
		r.DefaultP99, r.MLBPFP99 = p99Interval(r.Default), p99Interval(r.MLBPF)
		r.BestP99 = Interval{Mean: math.Inf(1)}
		for _, s := range cfg.Settings {
			if iv := p99Interval(r.Fixed[s]); iv.Mean < r.BestP99.Mean {
				r.Best, r.BestP99 = s, iv
			}
		}
		r.Speedup, r.VsBest = p99Ratio(r.Default, r.MLBPF), p99Ratio(r.Fixed[r.Best], r.MLBPF)
	}
	// The survey first, then the lines the issue asks for.
	for _, p := range paths {
		r := res[p]
		for _, s := range cfg.Settings {
			armLine(w, p, "fixed", s.String(), r.Survey[s], p99Interval(r.Fixed[s]))
		}
		armLine(w, p, "mlbpf", rto.Default.String(), r.BesideDef, r.DefaultP99)
		armLine(w, p, "mlbpf", "mlbpf", r.BesideMLBP, r.MLBPFP99)
	}
	for _, p := range paths {
		fmt.Fprintln(w, res[p].Line())
	}
	if t, ok := tradeoff(res); ok {
		fmt.Fprintln(w, t)
	}
	fmt.Fprintln(w, cost.Line())
	arms, _ := e.o.ArmCounts()
	names := make([]string, 0, len(arms))
	for i, n := range arms {
		names = append(names, fmt.Sprintf("%s=%d", model.Arm(i), n))
	}
	fmt.Fprintf(w, "tcprto arms %s\n", strings.Join(names, " "))
	if r := rtts(); len(r) > 0 {
		drops, err := e.tb.BloatDrops()
		dropped := fmt.Sprint(drops - drops0)
		if err != nil {
			dropped = "- (" + err.Error() + ")"
		}
		fmt.Fprintf(w, "tcprto bloat background_rtt_ms=%.0f/%.0f/%.0f (min/p50/max of %d samples) queue_drops=%s\n",
			r[0], pct(r, 0.5), r[len(r)-1], len(r), dropped)
	}
	return nil
}

// sampleRTT samples the bloat path's background flow's round trip every
// 250 ms until ctx ends or the function it returns is called, which
// returns the samples (ms), sorted.
func sampleRTT(ctx context.Context, tb *testbed.Paths) func() []float64 {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan []float64, 1)
	go func() {
		var out []float64
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				slices.Sort(out)
				done <- out
				return
			case <-t.C:
			}
			if rtt, err := tb.BackgroundRTT(); err == nil {
				out = append(out, float64(rtt)/1e6)
			}
		}
	}()
	return func() []float64 {
		stop()
		return <-done
	}
}

// tradeoff formats the trade-off line: the setting fixed with the
// lowest p99 on the lossy path, its p99 over the default's on each path
// (fixed arms, measured at once: paired intervals) and its mean's. It
// wins where the ratio's interval is below 1 and loses where it is
// above.
func tradeoff(res map[testbed.Path]*PathResult) (string, bool) {
	s := res[testbed.PathLossy].Best
	if s == rto.Default {
		return "", false
	}
	line := fmt.Sprintf("tcprto tradeoff setting=%s", s)
	for _, p := range paths {
		r := res[p]
		a, d := r.Fixed[s], r.Fixed[rto.Default]
		if a == nil || d == nil {
			return "", false
		}
		ratio := p99Ratio(a, d)
		verdict := "even"
		switch {
		case ratio.High < 1:
			verdict = "wins"
		case ratio.Low > 1:
			verdict = "loses"
		}
		line += fmt.Sprintf(" %s_p99_vs_default=%s %s_mean_vs_default=%.2f %s=%s", p, ratio, p,
			r.Survey[s].Mean/r.Survey[rto.Default].Mean, p, verdict)
	}
	return line, true
}

// armLine prints one arm's summary over all rounds: slot "fixed" (the
// grid's settings at once) or "mlbpf" (mlbpf and the default at once).
func armLine(w io.Writer, p testbed.Path, slot, setting string, st Stats, p99 Interval) {
	fmt.Fprintf(w, "tcprto arm path=%s slot=%s setting=%s flows=%d mean_ms=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%s syn_retrans=%.2f retrans=%.2f rto_timeouts=%.2f dsacks=%.3f\n",
		p, slot, setting, st.N, st.Mean, st.P50, st.P90, p99.fmt(0), st.SynRetrans, st.Retrans, st.Timeouts, st.DSACKs)
}

// learn runs the model on both paths at once until every prefix has
// chosen (or maxLearn flows per path), and returns what it recommends,
// its mode and RECOMMENDATION's holdout as its loop set it (the control
// block's, which the learner sizes: rto.Learner.Holdout).
func learn(ctx context.Context, e *env, res map[testbed.Path]*PathResult) (map[netip.Prefix][]rto.Setting, model.Mode, uint32, error) {
	log := e.cfg.Logger
	for _, p := range paths {
		if err := e.o.Withdraw(p.Addrs().Prefix); err != nil {
			return nil, 0, 0, err
		}
	}
	const maxLearn, batch = 400, 25
	start := time.Now()
	var mode model.Mode
	var recs map[netip.Prefix][]rto.Setting
	var l *rto.Learner
	var holdout uint32
	err := e.run(ctx, pipeline.Env{Options: rto.DefaultOptions()}, e.cfg.Settings, func(*rto.Flow) {}, func(ctx context.Context, loop *pipeline.Loop) error {
		l = loop.Objects().(*rto.Objects).Learner()
		period := loop.Model().Options().SleepTimeout
		for sent := 0; ; sent += batch {
			if len(l.Destinations()) == len(paths) && !l.Exploring() {
				break
			}
			if sent >= maxLearn {
				log.Warn("still exploring", "flows_per_path", sent)
				break
			}
			if err := e.flows(ctx, load{testbed.PathLossy: {batch}, testbed.PathBloat: {batch}}); err != nil {
				return err
			}
			time.Sleep(2 * period) // the last records in
		}
		time.Sleep(2 * period)
		// The holdout is sized from the chosen setting's p99 and the
		// default's tail (rto.Learner.Holdout): on the few dozen flows
		// per setting of a first choice that p99 is their slowest flow.
		// A window's worth of lossy flows in RECOMMENDATION, as a daemon
		// runs them next, gives the share it keeps.
		if !l.Exploring() && len(l.Recommendations()) > 0 {
			if err := e.flows(ctx, load{testbed.PathLossy: {l.Config().Window}}); err != nil {
				return err
			}
			time.Sleep(2 * period)
		}
		mode = loop.Model().Mode()
		recs = l.Recommendations()
		holdout = loop.Model().Control().HoldoutPermille
		return nil
	})
	if err != nil {
		return nil, 0, 0, err
	}
	for _, d := range l.Destinations() {
		if p, i, ok := e.destOf(d.Prefix.Addr()); ok && i == 0 {
			res[p].LearnedAfter, res[p].Chosen = d.LearnedAfter, d.Setting
			log.Info("learned", "path", p, "after", d.LearnedAfter, "chosen", d.Setting, "arms", d.Arms)
		}
	}
	for _, r := range res {
		r.HoldoutPermille = holdout
	}
	log.Info("learning done", "took", time.Since(start).Round(time.Second), "mode", mode, "holdout_permille", holdout)
	return recs, mode, holdout, nil
}

func progStats(p *ebpf.Program) (ns, cnt uint64, err error) {
	st, err := p.Stats()
	if err != nil {
		return 0, 0, fmt.Errorf("reading program statistics: %w", err)
	}
	return uint64(st.Runtime), st.RunCount, nil
}

// startCC runs tcp/cc in LEARNING on the same cgroup, both models at once,
// so that the cost line can put the two programs side by side.
func startCC(e *env) (*ebpf.Program, func(), error) {
	s, err := tcp.Open(tcp.Config{
		PinRoot: e.pins, Cgroup: e.tb.Cgroup(), Default: "cubic",
		Options: model.Options{SleepTimeout: time.Second, Lease: time.Hour, MaxMode: model.ModeLearning},
	})
	if err != nil {
		return nil, nil, err
	}
	m := s.Model()
	if err := errors.Join(m.Start(model.RunConfig{}), s.Attach(), m.RenewLease(loader.MonotonicNs())); err != nil {
		_ = s.Close()
		return nil, nil, err
	}
	return s.Program(), func() {
		_ = m.Stop()
		_ = s.Detach()
		_ = s.Close()
	}, nil
}
