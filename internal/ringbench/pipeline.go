package ringbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"sync"
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
// preprocessed and published to a publisher that keeps it (as the
// daemon's does, for agents), the decoded records handed to a trivial
// learner, then the mode controller's estimate and correction.
type PipelineResult struct {
	Size    int    `json:"size"`
	Records uint64 `json:"records"` // per full ring
	// Pipeline, Drain and Checksum are in records per second: the loop,
	// our NextBatch reading each record's first 8 bytes in place (the
	// raw drain), and reading every byte of each record in place (the
	// checksum drain: what any consumer that copies or decodes whole
	// records cannot beat).
	Pipeline Rate `json:"pipeline"`
	Drain    Rate `json:"drain"`
	Checksum Rate `json:"checksum"`
	// VsDrain and VsChecksum are the medians over repeats of
	// pipeline/drain and pipeline/checksum, each measured on identical
	// rings in the same repeat, with their intervals.
	VsDrain    Ratio `json:"vs_drain"`
	VsChecksum Ratio `json:"vs_checksum"`
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

// ModelObjects are a producer's maps as a model's objects
// (pipeline.Objects), for benchmarks and tests: a recommendation is kept
// in a map, not written anywhere the producer reads.
type ModelObjects struct {
	model.GenericModelOps
	p   *Producer
	ctl *loader.ControlMap

	mu       sync.Mutex
	applied  map[string]string
	operator map[string]bool
}

// ModelObjects returns the producer's maps as a model's objects.
func (p *Producer) ModelObjects() (*ModelObjects, error) {
	ctl, err := loader.NewControlMap(p.objs.Control)
	if err != nil {
		return nil, err
	}
	return &ModelObjects{p: p, ctl: ctl, applied: map[string]string{}, operator: map[string]bool{}}, nil
}

// ApplyRecommendation implements model.ModelOps.
func (o *ModelObjects) ApplyRecommendation(_ *model.Model, rec model.Recommendation) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applied[rec.Key] = rec.Value
	return nil
}

// RecommendOperator implements pipeline.Objects.
func (o *ModelObjects) RecommendOperator(rec model.Recommendation) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applied[rec.Key], o.operator[rec.Key] = rec.Value, true
	return nil
}

// WithdrawLearned implements pipeline.Objects.
func (o *ModelObjects) WithdrawLearned(key string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.operator[key] {
		delete(o.applied, key)
	}
	return nil
}

// Applied returns the recommendations in place, by key.
func (o *ModelObjects) Applied() map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.applied)
}

// Dir implements pipeline.Objects: nothing is pinned.
func (o *ModelObjects) Dir() string { return "" }

// Control implements pipeline.Objects.
func (o *ModelObjects) Control() *loader.ControlMap { return o.ctl }

// Events implements pipeline.Objects.
func (o *ModelObjects) Events() *ebpf.Map { return o.p.Events() }

// Lost implements pipeline.Objects.
func (o *ModelObjects) Lost() *ebpf.Map { return o.p.Lost() }

// Close implements pipeline.Objects: the producer is the caller's.
func (o *ModelObjects) Close() error { return nil }

// keeper is a pipeline.Publisher that keeps the last portions, as the
// daemon's does for agents (without spooling them to disk), and hands
// older ones back for reuse.
type keeper struct {
	kept, free []*model.Dataset
}

const keepPortions = 4

func (k *keeper) Publish(m *model.Model, ds *model.Dataset) {
	_, _ = m.PublishData(ds)
	if len(k.kept) == keepPortions {
		k.free = append(k.free, k.kept[0])
		k.kept = append(k.kept[:0], k.kept[1:]...)
	}
	k.kept = append(k.kept, ds)
}

func (k *keeper) Free() *model.Dataset {
	if len(k.free) == 0 {
		return nil
	}
	ds := k.free[len(k.free)-1]
	k.free = k.free[:len(k.free)-1]
	return ds
}

// newBenchLoop plugs p's maps into a loop of tcp/cc-sized records
// decoded by decodeBench, with a keeper and a countLearner, and starts
// its model. Like the daemon's, the loop has a state directory (a
// temporary one), so it keeps its per-period history as under 'mlbpf
// run'. close undoes it all.
func newBenchLoop(p *Producer) (l *pipeline.Loop, learner *countLearner, close func(), err error) {
	objs, err := p.ModelObjects()
	if err != nil {
		return nil, nil, nil, err
	}
	state, err := os.MkdirTemp("", "ringbench-state-")
	if err != nil {
		return nil, nil, nil, err
	}
	learner = &countLearner{}
	l, err = pipeline.New(pipeline.Env{Model: "bench", Publisher: &keeper{}, StateDir: state,
		Options: model.Options{SleepTimeout: time.Second, MaxMode: model.ModeLearning}},
		pipeline.Parts[benchRecord]{
			Subsystem: "ringbench", Objects: objs,
			Records: pipeline.RecordFormat{Kind: loader.RecordTCPConn, Size: tcp.RecordSize},
			Decode:  decodeBench, Learner: learner,
		})
	if err != nil {
		os.RemoveAll(state)
		return nil, nil, nil, err
	}
	if err := l.Model().Start(model.RunConfig{}); err != nil {
		l.Close()
		os.RemoveAll(state)
		return nil, nil, nil, err
	}
	return l, learner, func() { _ = l.Model().Stop(); l.Close(); os.RemoveAll(state) }, nil
}

// ringRecords is how many records of size bytes a ring of ringBytes
// takes: the kernel never fills it completely.
func ringRecords(ringBytes uint32, size int) uint64 {
	step := uint64(8+size+7) &^ 7
	return uint64(ringBytes)/step - 1
}

// RunPipeline measures the pipeline against the raw drain (Ours) and the
// checksum drain (OursChecksum), with opts.Repeats full rings of
// opts.RingBytes each, tcp/cc-sized records, the consumer on
// opts.ConsumerCPU and the producer on opts.ProducerCPU, the three in
// turn, rotated from repeat to repeat.
func RunPipeline(ctx context.Context, opts Options, log io.Writer) (PipelineResult, error) {
	size := tcp.RecordSize
	res := PipelineResult{Size: size}
	// Rings alike: the consumer position lives in the map, so the
	// loop's reader and the raw drains' must not share one.
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
	prod, err := newWorker(opts.ProducerCPU)
	if err != nil {
		return res, err
	}
	defer prod.stop()
	l, learner, closeLoop, err := newBenchLoop(p)
	if err != nil {
		return res, err
	}
	defer closeLoop()

	n := ringRecords(opts.RingBytes, size)
	res.Records = n
	fill := func(p *Producer) (err error) {
		prod.do(func() { _, err = p.Emit(EmitArgs{Count: n, Size: uint64(size), Kind: uint64(loader.RecordTCPConn)}) })
		return err
	}
	drain := func(api string) (float64, error) {
		if err := fill(raw); err != nil {
			return 0, err
		}
		rd, err := ringbuf.NewReader(raw.Events())
		if err != nil {
			return 0, err
		}
		defer rd.Close()
		var t tally
		cons.do(func() { t, err = drainOurs(rd, n, api) })
		return float64(t.records) / t.elapsed.Seconds(), err
	}
	var pipeRates, drainRates, checkRates []float64
	var mallocs, records uint64
	for rep := range opts.Repeats {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var pipeRate, drainRate, checkRate float64
		for i := range 3 {
			switch (i + rep) % 3 { // rotate who goes first
			case 0:
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
			case 1:
				if drainRate, err = drain(Ours); err != nil {
					return res, err
				}
			case 2:
				if checkRate, err = drain(OursChecksum); err != nil {
					return res, err
				}
			}
		}
		pipeRates, drainRates, checkRates = append(pipeRates, pipeRate), append(drainRates, drainRate), append(checkRates, checkRate)
	}
	res.Pipeline, res.Drain, res.Checksum = rateOf(pipeRates), rateOf(drainRates), rateOf(checkRates)
	res.VsDrain, res.VsChecksum = pairedRatio(pipeRates, drainRates), pairedRatio(pipeRates, checkRates)
	res.AllocsPerRecord = float64(mallocs) / float64(records)
	fmt.Fprintf(log, "size=%d pipeline of %d records (ring %d MiB) x %d, median [min-max]: pipeline=%.1fM/s [%.1f-%.1f] drain=%.1fM/s [%.1f-%.1f] checksum=%.1fM/s [%.1f-%.1f] allocs/record=%.4f\n",
		size, n, opts.RingBytes>>20, opts.Repeats, res.Pipeline.Median/1e6, res.Pipeline.Min/1e6, res.Pipeline.Max/1e6,
		res.Drain.Median/1e6, res.Drain.Min/1e6, res.Drain.Max/1e6, res.Checksum.Median/1e6, res.Checksum.Min/1e6, res.Checksum.Max/1e6, res.AllocsPerRecord)
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

// String is the result's line in 'make bench-ringbuf': "pipeline
// size=128 records/s=… vs_drain=0.52 [0.50-0.55] vs_checksum=… [...]
// allocs/record=0.0000 goals=met", the intervals of Ratio's confidence
// (97 % with 31 repeats). The goals (0.5x the raw drain, no allocation per
// record) are judged as the ringbuf lines' are.
func (r PipelineResult) String() string {
	return fmt.Sprintf("pipeline size=%d records/s=%.0f vs_drain=%.2f [%.2f-%.2f] vs_checksum=%.2f [%.2f-%.2f] allocs/record=%.4f goals=%s",
		r.Size, r.Pipeline.Median, r.VsDrain.Median, r.VsDrain.Lower, r.VsDrain.Upper,
		r.VsChecksum.Median, r.VsChecksum.Lower, r.VsChecksum.Upper, r.AllocsPerRecord, r.judge())
}

// judge says whether the goals are met, as Line.judge.
func (r PipelineResult) judge() string {
	return verdict([]goal{{"vs_drain", r.VsDrain, GoalVsDrain}}, r.AllocsPerRecord)
}

// GoalVsDrain is the pipeline's goal: at least half the raw drain's rate.
const GoalVsDrain = 0.5
