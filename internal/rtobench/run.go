package rtobench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
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

// Interval is a mean over repeats with the half-width of its 95 %
// confidence interval (Student's t).
type Interval struct{ Mean, Half float64 }

func interval(xs []float64) Interval {
	n := len(xs)
	if n == 0 {
		return Interval{Mean: math.NaN()}
	}
	var m float64
	for _, x := range xs {
		m += x
	}
	m /= float64(n)
	if n < 2 {
		return Interval{Mean: m}
	}
	var v float64
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	sd := math.Sqrt(v / float64(n-1))
	return Interval{Mean: m, Half: tQuantile975(n-1) * sd / math.Sqrt(float64(n))}
}

// tQuantile975 is Student's t 0.975 quantile for df degrees of freedom.
func tQuantile975(df int) float64 {
	table := []float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228}
	if df >= 1 && df <= len(table) {
		return table[df-1]
	}
	return 1.96
}

// Ratio is the geometric mean of ratios over repeats with its 95 %
// confidence interval, computed in log space.
type Ratio struct{ Mean, Low, High float64 }

func ratio(xs []float64) Ratio {
	logs := make([]float64, 0, len(xs))
	for _, x := range xs {
		if x > 0 && !math.IsInf(x, 0) {
			logs = append(logs, math.Log(x))
		}
	}
	iv := interval(logs)
	return Ratio{Mean: math.Exp(iv.Mean), Low: math.Exp(iv.Mean - iv.Half), High: math.Exp(iv.Mean + iv.Half)}
}

// String formats r as "2.50[1.90,3.29]".
func (r Ratio) String() string { return fmt.Sprintf("%.2f[%.2f,%.2f]", r.Mean, r.Low, r.High) }

func (i Interval) fmt(prec int) string {
	return fmt.Sprintf("%.*f±%.*f", prec, i.Mean, prec, i.Half)
}

// PathResult is one path's figures.
type PathResult struct {
	Path  testbed.Path
	Flows int // per arm and repeat
	// Fixed is each grid setting's p99 (ms) per repeat.
	Fixed   map[rto.Setting][]float64
	Default Interval
	Best    rto.Setting
	BestP99 Interval
	MLBPF   Interval
	// Speedup and VsBest are the ratios default/mlbpf and best/mlbpf of
	// the p99s, repeat by repeat, summarised in log space (a ratio's
	// interval is not symmetric).
	Speedup, VsBest Ratio
	Mode            model.Mode
	LearnedAfter    int
	Chosen          rto.Setting
	// Survey keeps each arm's summary over all repeats.
	Survey map[rto.Setting]Stats
}

// Line formats r as the benchmark's line for its path.
func (r PathResult) Line() string {
	learned := "-"
	if r.LearnedAfter > 0 {
		learned = fmt.Sprint(r.LearnedAfter)
	}
	return fmt.Sprintf("tcprto path=%s flows=%d default_p99_ms=%s best=%s:%s mlbpf_p99_ms=%s speedup=%s vs_best=%s mode=%v learned_after=%s chosen=%s",
		r.Path, r.Flows, r.Default.fmt(0), r.Best, r.BestP99.fmt(0), r.MLBPF.fmt(0), r.Speedup, r.VsBest,
		r.Mode, learned, r.Chosen)
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

// Run lets one model learn both paths at once, then measures every grid
// setting fixed and mlbpf after learning (its holdout included) on both
// paths, in turn, Repeats times, and prints one line per setting and path,
// one line per path and a cost line.
func Run(ctx context.Context, w io.Writer, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	e, err := setup(ctx, cfg)
	if err != nil {
		return err
	}
	defer e.close()

	res := map[testbed.Path]*PathResult{}
	all := map[testbed.Path]map[rto.Setting][]rto.Flow{}
	for _, p := range paths {
		n := cfg.Flows
		if p == testbed.PathLossy {
			n = cfg.LossyFlows
		}
		res[p] = &PathResult{Path: p, Flows: n, Fixed: map[rto.Setting][]float64{}, Survey: map[rto.Setting]Stats{}}
		all[p] = map[rto.Setting][]rto.Flow{}
	}

	// Learning: one model, both paths at once, from an empty map.
	learned, mode, err := learn(ctx, e, res)
	if err != nil {
		return err
	}

	// Then each grid setting fixed and mlbpf as it stands after learning
	// (its recommendations, RECOMMENDATION with its holdout), in turn,
	// each repeat starting with another, so that drift in the bloat
	// path's queue hits them alike. The program's cost is measured
	// meanwhile, with tcp/cc running on the same cgroup.
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
	mlbpf := map[testbed.Path][]float64{}
	slots := len(cfg.Settings) + 1 // the last is mlbpf
	conns := 0
	for rep := range cfg.Repeats {
		for k := range slots {
			slot := (k + rep) % slots
			var out map[testbed.Path][]rto.Flow
			if slot == len(cfg.Settings) {
				out, err = e.measure(ctx, learned, model.Options{
					InitialMode: model.ModeRecommendation, MaxMode: model.ModeRecommendation,
					HoldoutPermille: rto.DefaultOptions().HoldoutPermille,
				})
			} else {
				out, err = e.fixed(ctx, cfg.Settings[slot])
			}
			if err != nil {
				return err
			}
			conns += cfg.LossyFlows + cfg.Flows
			for _, p := range paths {
				st := summarize(out[p])
				if slot == len(cfg.Settings) {
					mlbpf[p] = append(mlbpf[p], st.P99)
					log.Info("mlbpf", "repeat", rep, "path", p, "flows", st.N, "p50", st.P50, "p99", st.P99)
					continue
				}
				s := cfg.Settings[slot]
				res[p].Fixed[s] = append(res[p].Fixed[s], st.P99)
				all[p][s] = append(all[p][s], out[p]...)
				log.Info("fixed", "repeat", rep, "path", p, "setting", s, "flows", st.N, "p50", st.P50, "p99", st.P99)
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
		res[p].Mode = mode
		for _, s := range cfg.Settings {
			res[p].Survey[s] = summarize(all[p][s])
		}
	}

	for _, p := range paths {
		r := res[p]
		r.Default = interval(r.Fixed[rto.Default])
		r.BestP99 = Interval{Mean: math.Inf(1)}
		for _, s := range cfg.Settings {
			if iv := interval(r.Fixed[s]); iv.Mean < r.BestP99.Mean {
				r.Best, r.BestP99 = s, iv
			}
		}
		r.MLBPF = interval(mlbpf[p])
		var sp, vb []float64
		for i, m := range mlbpf[p] {
			if m > 0 && i < len(r.Fixed[rto.Default]) && i < len(r.Fixed[r.Best]) {
				sp = append(sp, r.Fixed[rto.Default][i]/m)
				vb = append(vb, r.Fixed[r.Best][i]/m)
			}
		}
		r.Speedup, r.VsBest = ratio(sp), ratio(vb)
	}
	// The survey first, then the lines the issue asks for.
	for _, p := range paths {
		for _, s := range cfg.Settings {
			st := res[p].Survey[s]
			fmt.Fprintf(w, "tcprto arm path=%s setting=%s flows=%d mean_ms=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%s syn_retrans=%.2f retrans=%.2f rto_timeouts=%.2f dsacks=%.3f\n",
				p, s, st.N, st.Mean, st.P50, st.P90, interval(res[p].Fixed[s]).fmt(0), st.SynRetrans, st.Retrans, st.Timeouts, st.DSACKs)
		}
	}
	for _, p := range paths {
		fmt.Fprintln(w, res[p].Line())
	}
	fmt.Fprintln(w, cost.Line())
	arms, _ := e.o.ArmCounts()
	names := make([]string, 0, len(arms))
	for i, n := range arms {
		names = append(names, fmt.Sprintf("%s=%d", model.Arm(i), n))
	}
	fmt.Fprintf(w, "tcprto arms %s\n", strings.Join(names, " "))
	return nil
}

// learn runs the model on both paths at once until every prefix has
// chosen (or maxLearn flows per path), and returns what it recommends and
// its mode.
func learn(ctx context.Context, e *env, res map[testbed.Path]*PathResult) (map[netip.Prefix][]rto.Setting, model.Mode, error) {
	log := e.cfg.Logger
	for _, p := range paths {
		if err := e.o.Withdraw(p.Addrs().Prefix); err != nil {
			return nil, 0, err
		}
	}
	const maxLearn, batch = 400, 25
	start := time.Now()
	var mode model.Mode
	var recs map[netip.Prefix][]rto.Setting
	var l *rto.Learner
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
			if err := e.flows(ctx, batch, batch); err != nil {
				return err
			}
			time.Sleep(2 * period) // the last records in
		}
		time.Sleep(2 * period)
		mode = loop.Model().Mode()
		recs = l.Recommendations()
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	for _, d := range l.Destinations() {
		if p, ok := pathOf(d.Prefix.Addr()); ok {
			res[p].LearnedAfter, res[p].Chosen = d.LearnedAfter, d.Setting
			log.Info("learned", "path", p, "after", d.LearnedAfter, "chosen", d.Setting, "arms", d.Arms)
		}
	}
	log.Info("learning done", "took", time.Since(start).Round(time.Second), "mode", mode)
	return recs, mode, nil
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
