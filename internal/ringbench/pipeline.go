package ringbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/ringbuf"
	"github.com/mlbpf/mlbpf/tcp"
)

// PipelineResult compares the whole period loop (package pipeline) with
// the raw consumer's drain, on the same full rings of tcp/cc-sized
// records: get_dataset with our consumer, the portion decoded once,
// preprocessed and published, the decoded records handed to a trivial
// learner, then the mode controller's estimate and correction.
type PipelineResult struct {
	Size    int    `json:"size"`
	Records uint64 `json:"records"` // per full ring
	// Pipeline and Drain are in records per second.
	Pipeline Rate `json:"pipeline"`
	Drain    Rate `json:"drain"`
	// VsDrain is the median over repeats of pipeline/drain, measured
	// back to back on the same ring; Low and High bound it with 95 %
	// confidence (order statistics of the median).
	VsDrain     float64 `json:"vs_drain"`
	VsDrainLow  float64 `json:"vs_drain_low"`
	VsDrainHigh float64 `json:"vs_drain_high"`
	// AllocsPerRecord are the pipeline's heap allocations per record.
	AllocsPerRecord float64 `json:"allocs_per_record"`
}

// benchRecord is what the trivial learner gets: the record's header
// fields and its sequence number.
type benchRecord struct {
	kind, size uint16
	seq        uint64
}

func decodeBench(raw []byte, r *benchRecord) error {
	if len(raw) < loader.RecordHeaderSize+8 {
		return fmt.Errorf("%d bytes: want a header and a sequence number", len(raw))
	}
	r.kind = binary.NativeEndian.Uint16(raw[hdrKindOff:])
	r.size = binary.NativeEndian.Uint16(raw[hdrSizeOff:])
	r.seq = binary.NativeEndian.Uint64(raw[loader.RecordHeaderSize:])
	return nil
}

var (
	hdrKindOff = int(unsafe.Offsetof(loader.RecordHeader{}.Kind))
	hdrSizeOff = int(unsafe.Offsetof(loader.RecordHeader{}.Size))
)

// countLearner counts and sums what it is given.
type countLearner struct{ records, sum uint64 }

func (c *countLearner) Learn(recs []benchRecord, _ *pipeline.Result) {
	for i := range recs {
		c.records++
		c.sum += recs[i].seq
	}
}

// benchObjects are the producer's maps as a model's objects.
type benchObjects struct {
	model.GenericModelOps
	p   *Producer
	ctl *loader.ControlMap
}

func (o *benchObjects) Dir() string                                  { return "" }
func (o *benchObjects) Control() *loader.ControlMap                  { return o.ctl }
func (o *benchObjects) Events() *ebpf.Map                            { return o.p.Events() }
func (o *benchObjects) Lost() *ebpf.Map                              { return o.p.Lost() }
func (o *benchObjects) RecommendOperator(model.Recommendation) error { return nil }
func (o *benchObjects) WithdrawLearned(string) error                 { return nil }
func (o *benchObjects) Close() error                                 { return nil }

// RunPipeline measures the pipeline against the raw drain (Ours) with
// opts.Repeats full rings of opts.RingBytes each, tcp/cc-sized records,
// the consumer on opts.ConsumerCPU.
func RunPipeline(ctx context.Context, opts Options, log io.Writer) (PipelineResult, error) {
	size := tcp.RecordSize
	res := PipelineResult{Size: size}
	// Two rings alike: the consumer position lives in the map, so the
	// loop's reader and the raw drain's must not share one.
	p, err := NewProducer(Config{RingBytes: opts.RingBytes})
	if err != nil {
		return res, err
	}
	defer p.Close()
	raw, err := NewProducer(Config{RingBytes: opts.RingBytes})
	if err != nil {
		return res, err
	}
	defer raw.Close()
	cons, err := newWorker(opts.ConsumerCPU)
	if err != nil {
		return res, err
	}
	defer cons.stop()
	ctl, err := loader.NewControlMap(p.objs.Control)
	if err != nil {
		return res, err
	}
	learner := &countLearner{}
	l, err := pipeline.New(pipeline.Env{Model: "bench", Options: model.Options{SleepTimeout: time.Second, MaxMode: model.ModeLearning}},
		pipeline.Parts[benchRecord]{
			Subsystem: "ringbench", Objects: &benchObjects{p: p, ctl: ctl},
			Records: pipeline.RecordFormat{Kind: loader.RecordTCPConn, Size: size},
			Decode:  decodeBench, Learner: learner,
		})
	if err != nil {
		return res, err
	}
	defer l.Close()
	if err := l.Model().Start(model.RunConfig{}); err != nil {
		return res, err
	}
	defer l.Model().Stop()

	step := uint64(8+size+7) &^ 7
	n := uint64(opts.RingBytes)/step - 1 // the kernel never fills the ring completely
	res.Records = n
	fill := func(p *Producer) error {
		_, err := p.Emit(EmitArgs{Count: n, Size: uint64(size), Kind: uint64(loader.RecordTCPConn)})
		return err
	}
	var pipeRates, drainRates, ratios []float64
	var mallocs, records uint64
	for rep := range opts.Repeats {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var pipeRate, drainRate float64
		for i := range 2 {
			if (i+rep)%2 == 0 { // rotate who goes first
				if err := fill(p); err != nil {
					return res, err
				}
				t, err := pipelineOnce(l, learner, n, cons)
				if err != nil {
					return res, err
				}
				pipeRate = float64(t.records) / t.elapsed.Seconds()
				mallocs += t.mallocs
				records += t.records
				continue
			}
			if err := fill(raw); err != nil {
				return res, err
			}
			rd, err := ringbuf.NewReader(raw.Events())
			if err != nil {
				return res, err
			}
			var t tally
			cons.do(func() { t, err = drainOurs(rd, n, Ours) })
			rd.Close()
			if err != nil {
				return res, err
			}
			drainRate = float64(t.records) / t.elapsed.Seconds()
		}
		pipeRates, drainRates = append(pipeRates, pipeRate), append(drainRates, drainRate)
		ratios = append(ratios, pipeRate/drainRate)
	}
	res.Pipeline, res.Drain = rateOf(pipeRates), rateOf(drainRates)
	slices.Sort(ratios)
	lo, hi := medianCI(len(ratios))
	res.VsDrain, res.VsDrainLow, res.VsDrainHigh = ratios[len(ratios)/2], ratios[lo], ratios[hi]
	res.AllocsPerRecord = float64(mallocs) / float64(records)
	fmt.Fprintf(log, "size=%d pipeline of %d records (ring %d MiB) x %d, median [min-max]: pipeline=%.1fM/s [%.1f-%.1f] drain=%.1fM/s [%.1f-%.1f] pipeline/drain=%.2f [95%% CI %.2f-%.2f] allocs/record=%.4f\n",
		size, n, opts.RingBytes>>20, opts.Repeats, res.Pipeline.Median/1e6, res.Pipeline.Min/1e6, res.Pipeline.Max/1e6,
		res.Drain.Median/1e6, res.Drain.Min/1e6, res.Drain.Max/1e6, res.VsDrain, res.VsDrainLow, res.VsDrainHigh, res.AllocsPerRecord)
	return res, nil
}

// pipelineOnce runs periods until the learner has had the n records of a
// full ring.
func pipelineOnce(l *pipeline.Loop, learner *countLearner, n uint64, cons *worker) (tally, error) {
	var t tally
	var err error
	cons.do(func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before, start := ms.Mallocs, time.Now()
		first := learner.records
		// A full ring takes one period; give up after a few empty ones.
		for idle := 0; learner.records-first < n && err == nil && idle < 3; {
			got := learner.records
			err = l.Period()
			if learner.records == got {
				idle++
			}
		}
		t.elapsed = time.Since(start)
		runtime.ReadMemStats(&ms)
		t.mallocs, t.records = ms.Mallocs-before, learner.records-first
	})
	if err == nil && t.records != n {
		st := l.Stats()
		err = fmt.Errorf("the learner got %d records of a ring of %d (loop: %+v)", t.records, n, st)
	}
	return t, err
}

func rateOf(rs []float64) Rate {
	s := slices.Sorted(slices.Values(rs))
	return Rate{Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1]}
}

// medianCI returns the ranks (0-based, in sorted order) of the order
// statistics bounding the median of n samples with at least 95 %
// confidence: the largest k with P(Binomial(n, 1/2) < k) ≤ 2.5 %.
func medianCI(n int) (lo, hi int) {
	cdf, k := 0.0, 0
	for ; k < n; k++ {
		p := math.Exp(lgammaInt(n+1)-lgammaInt(k+1)-lgammaInt(n-k+1)) * math.Pow(0.5, float64(n))
		if cdf+p > 0.025 {
			break
		}
		cdf += p
	}
	if k == 0 {
		return 0, n - 1
	}
	return k - 1, n - k
}

func lgammaInt(n int) float64 {
	v, _ := math.Lgamma(float64(n))
	return v
}

// String is the result's line in 'make bench-ringbuf'.
func (r PipelineResult) String() string {
	return fmt.Sprintf("pipeline size=%d records/s=%.0f vs_drain=%.2f [%.2f-%.2f] allocs/record=%.4f",
		r.Size, r.Pipeline.Median, r.VsDrain, r.VsDrainLow, r.VsDrainHigh, r.AllocsPerRecord)
}
