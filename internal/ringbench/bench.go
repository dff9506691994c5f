package ringbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/ringbuf"
)

// Options configure the benchmark.
type Options struct {
	// Sizes are the record sizes to measure, in bytes, at least 8.
	Sizes []int
	// Repeats is how many times each consumer drains a full ring per
	// size; the median is reported, and ratios with a confidence interval
	// over the repeats.
	Repeats int
	// RingBytes is the ring buffer size of the drains.
	RingBytes uint32
	// LiveRingBytes is the ring buffer size of the live runs: large
	// enough to ride out the consumer being descheduled (on a virtual
	// machine, for up to a few hundred ms).
	LiveRingBytes uint32
	// CostRingBytes is the ring buffer size of the BPF cost measurement:
	// that of mlbpf's collectors (MLBPF_MODEL_MAPS in the models, 1 MiB),
	// so that the cost is the one they pay. A ring far larger than the
	// caches makes every record a cache and TLB miss the collectors do
	// not have.
	CostRingBytes uint32
	// Live is the duration of each consumer's live run, the producer at
	// its top rate; 0 skips the live runs.
	Live time.Duration
	// LiveBatch is the number of records one getppid(2) call emits in the
	// live runs.
	LiveBatch uint32
	// CostEvents is the number of producer invocations the BPF cost is
	// measured over; 0 skips the measurement.
	CostEvents int
	// CC is the C compiler that builds the libbpf consumer.
	CC string
	// ConsumerCPU and ProducerCPU pin the consumers and the producer
	// (-1: not pinned).
	ConsumerCPU, ProducerCPU int
}

// DefaultOptions are the options `make bench-ringbuf` runs with.
func DefaultOptions() Options {
	return Options{
		Sizes:         []int{8, 64, 256},
		Repeats:       31,
		RingBytes:     4 << 20,
		LiveRingBytes: 256 << 20,
		CostRingBytes: 1 << 20,
		Live:          time.Second,
		LiveBatch:     100,
		CostEvents:    200_000,
		CC:            "cc",
		ConsumerCPU:   0,
		ProducerCPU:   1,
	}
}

// Consumers, in the order they are reported. All of them read each
// record's first 8 bytes (its sequence number, which checks that every
// record was read once); the -checksum ones also read every byte of each
// record into a checksum, as a consumer that uses its records does.
const (
	Ours           = "ours"            // Reader.NextBatch and Batch.Next: zero-copy
	OursReadBatch  = "ours-readbatch"  // Reader.ReadBatch, a callback per record
	OursReadInto   = "ours-readinto"   // Reader.ReadInto, a copy per record
	Libbpf         = "libbpf"          // ring_buffer__consume, a callback per record
	Cilium         = "cilium"          // cilium/ebpf ringbuf.Reader.ReadInto, a copy per record
	OursChecksum   = "ours-checksum"   // Ours, every byte read
	LibbpfChecksum = "libbpf-checksum" // Libbpf, every byte read
	CiliumChecksum = "cilium-checksum" // Cilium, every byte read
)

var consumers = []string{Ours, OursReadBatch, OursReadInto, Libbpf, Cilium, OursChecksum, LibbpfChecksum, CiliumChecksum}

// Reads are the comparisons reported, one summary line each: how the
// consumers read, and which consumer stands for ours, libbpf and cilium.
var Reads = []Read{
	// Every consumer touches every byte of each record: the comparison
	// the goals are judged on.
	{Name: "checksum", Ours: OursChecksum, Libbpf: LibbpfChecksum, Cilium: CiliumChecksum, Goals: true},
	// Copies: our ReadInto against cilium's (libbpf has no copying
	// read; its callback is given the record in place).
	{Name: "readinto", Ours: OursReadInto, Libbpf: Libbpf, Cilium: Cilium},
	// Our zero-copy NextBatch against libbpf's callback and cilium's
	// copying ReadInto, each reading 8 bytes of a record.
	{Name: "zerocopy", Ours: Ours, Libbpf: Libbpf, Cilium: Cilium},
}

// Read names the consumers of one comparison.
type Read struct {
	Name                 string
	Ours, Libbpf, Cilium string
	// Goals: the benchmark's goals are judged on this comparison.
	Goals bool
}

// The goals, judged on the checksum comparison.
const (
	GoalVsLibbpf = 1.0 // ours at least as fast as libbpf
	GoalVsCilium = 1.5 // ours at least 1.5 times as fast as cilium/ebpf
	// GoalAllocs: no allocation per record, to the four decimals
	// reported (an allocation per drain of a full ring passes).
	GoalAllocs = 0.00005
)

// Confidence is the confidence of the ratios' intervals.
const Confidence = 0.95

// SizeResult is what the benchmark measured for one record size.
type SizeResult struct {
	Size           int                   `json:"size"`
	DrainRecords   uint64                `json:"drain_records"`
	Drain          map[string]Rate       `json:"drain"`
	AllocsPerRec   float64               `json:"allocs_per_record"` // of Ours
	Lines          []Line                `json:"lines"`
	Live           map[string]LiveResult `json:"live,omitempty"`
	BPFNsPerEvent  float64               `json:"bpf_ns_per_event,omitempty"`
	BPFNsPerRecord float64               `json:"bpf_ns_per_record_batched,omitempty"`
}

// Rate sums up repeated drains of one consumer, in records per second.
type Rate struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Line is one comparison, a summary line.
type Line struct {
	Read   string `json:"read"`
	Ours   string `json:"ours"`
	Libbpf string `json:"libbpf"`
	Cilium string `json:"cilium"`
	// OursRate, LibbpfRate and CiliumRate are the median rates, in
	// records per second.
	OursRate   float64 `json:"ours_rate"`
	LibbpfRate float64 `json:"libbpf_rate"`
	CiliumRate float64 `json:"cilium_rate"`
	// VsLibbpf and VsCilium are ours' rate over the other's, drain by
	// drain in the same repeat.
	VsLibbpf Ratio `json:"ours_vs_libbpf"`
	VsCilium Ratio `json:"ours_vs_cilium"`
	// AllocsPerRecord are ours' heap allocations per record read.
	AllocsPerRecord float64 `json:"allocs_per_record"`
	// Goals is "met", or what is missed or not shown, when the goals are
	// judged on this line; empty otherwise.
	Goals string `json:"goals,omitempty"`
}

// Ratio is the median of per-repeat ratios, with a distribution-free
// confidence interval for it (order statistics).
type Ratio struct {
	Median     float64 `json:"median"`
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	Confidence float64 `json:"confidence"`
}

// LiveResult is one consumer's live run.
type LiveResult struct {
	Produced uint64  `json:"produced"`
	Received uint64  `json:"received"`
	Lost     uint64  `json:"lost"`
	Rate     float64 `json:"produced_per_second"`
}

// tally is what one consumer run read.
type tally struct {
	records uint64
	sum     uint64 // of every record's first u64, the sequence number
	check   uint64 // of checksum() of every record, by the -checksum consumers
	elapsed time.Duration
	mallocs uint64
}

// checksum sums rec as native-endian 8-byte words, four at a time into
// four sums, then its last bytes one by one: every byte is read.
// libbpf/consumer.c has the same, which the C compiler inlines whole into
// the consumer's callback. Go's inliner takes only the part a record
// shorter than 32 bytes runs, checksumShort, so the Go consumers call
//
//	if len(rec) < 32 { c = checksumShort(rec) } else { c = checksum(rec) }
//
// and do the same loads and additions as the C consumer, inlined as far
// as it is (TestChecksumInlined).
func checksum(rec []byte) uint64 {
	var s0, s1, s2, s3 uint64
	for len(rec) >= 32 {
		s0 += binary.NativeEndian.Uint64(rec[0:8])
		s1 += binary.NativeEndian.Uint64(rec[8:16])
		s2 += binary.NativeEndian.Uint64(rec[16:24])
		s3 += binary.NativeEndian.Uint64(rec[24:32])
		rec = rec[32:]
	}
	return checksumShort(rec) + s0 + s1 + s2 + s3
}

// checksumShort is checksum's end: the 8-byte words of rec, then its
// last bytes. It is checksum of a record shorter than 32 bytes.
func checksumShort(rec []byte) uint64 {
	var s uint64
	for ; len(rec) >= 8; rec = rec[8:] {
		s += binary.NativeEndian.Uint64(rec)
	}
	for _, b := range rec {
		s += uint64(b)
	}
	return s
}

// Run measures every size in opts, writing progress to log, and returns
// the results.
func Run(ctx context.Context, opts Options, log io.Writer) ([]SizeResult, error) {
	dir, err := os.MkdirTemp("", "ringbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	consumerBin, err := BuildLibbpfConsumer(opts.CC, dir)
	if err != nil {
		return nil, err
	}

	cons, err := newWorker(opts.ConsumerCPU)
	if err != nil {
		return nil, err
	}
	defer cons.stop()
	prod, err := newWorker(opts.ProducerCPU)
	if err != nil {
		return nil, err
	}
	defer prod.stop()

	var out []SizeResult
	for _, size := range opts.Sizes {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		res, err := runSize(ctx, opts, size, consumerBin, cons, prod, log)
		if err != nil {
			return out, fmt.Errorf("size %d: %w", size, err)
		}
		out = append(out, res)
	}
	return out, nil
}

type bench struct {
	opts    Options
	p       *Producer
	lost    *ringbuf.LostCounter
	libbpf  *libbpfConsumer
	cons    *worker
	prod    *worker
	records uint64 // records in a full ring
}

func runSize(ctx context.Context, opts Options, size int, consumerBin string, cons, prod *worker, log io.Writer) (SizeResult, error) {
	res := SizeResult{Size: size, Drain: map[string]Rate{}}
	if err := drainAll(ctx, opts, size, consumerBin, cons, prod, log, &res); err != nil {
		return res, err
	}
	if opts.Live <= 0 && opts.CostEvents <= 0 {
		return res, nil
	}

	if opts.Live > 0 {
		b, closeBench, err := newBench(opts, opts.LiveRingBytes, size, consumerBin, cons, prod)
		if err != nil {
			return res, err
		}
		defer closeBench()
		res.Live = map[string]LiveResult{}
		for _, name := range []string{Ours, Libbpf, Cilium} {
			lr, err := b.liveOnce(name)
			if err != nil {
				return res, fmt.Errorf("%s live run: %w", name, err)
			}
			res.Live[name] = lr
			fmt.Fprintf(log, "size=%d live %s (ring %d MiB, %d records per getppid): produced %d (%.1fM/s), received %d, lost %d\n",
				size, name, opts.LiveRingBytes>>20, opts.LiveBatch, lr.Produced, lr.Rate/1e6, lr.Received, lr.Lost)
		}
	}
	if opts.CostEvents > 0 {
		b, closeBench, err := newBench(opts, opts.CostRingBytes, size, consumerBin, cons, prod)
		if err != nil {
			return res, err
		}
		defer closeBench()
		perEvent, err := b.bpfCost(1)
		if err != nil {
			return res, err
		}
		perRecord, err := b.bpfCost(opts.LiveBatch)
		if err != nil {
			return res, err
		}
		res.BPFNsPerEvent, res.BPFNsPerRecord = perEvent, perRecord/float64(opts.LiveBatch)
		fmt.Fprintf(log, "size=%d bpf cost (ring %d KiB; run_time_ns/run_cnt, minus a baseline program on the same hook): %.1f ns/event (1 record per event), %.1f ns/record (%d per event)\n",
			size, opts.CostRingBytes>>10, res.BPFNsPerEvent, res.BPFNsPerRecord, opts.LiveBatch)
	}
	return res, nil
}

// newBench loads and attaches a producer with a ring of ringBytes and
// starts a libbpf consumer on it.
func newBench(opts Options, ringBytes uint32, size int, consumerBin string, cons, prod *worker) (*bench, func(), error) {
	p, err := NewProducer(Config{RingBytes: ringBytes, SampleSize: uint32(size)})
	if err != nil {
		return nil, nil, err
	}
	if err := p.Attach(); err != nil {
		p.Close()
		return nil, nil, err
	}
	lost, err := ringbuf.NewLostCounter(p.Lost())
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	lib, err := startLibbpfConsumer(consumerBin, p.Events(), opts.ConsumerCPU)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	step := uint64(8+size+7) &^ 7
	b := &bench{opts: opts, p: p, lost: lost, libbpf: lib, cons: cons, prod: prod,
		// The kernel refuses a reservation that would fill the ring
		// completely.
		records: uint64(ringBytes)/step - 1}
	return b, func() {
		_ = lib.close()
		_ = p.Close()
	}, nil
}

func drainAll(ctx context.Context, opts Options, size int, consumerBin string, cons, prod *worker, log io.Writer, res *SizeResult) error {
	b, closeBench, err := newBench(opts, opts.RingBytes, size, consumerBin, cons, prod)
	if err != nil {
		return err
	}
	defer closeBench()
	res.DrainRecords = b.records

	rates := map[string][]float64{} // by repeat
	mallocs, records := map[string]uint64{}, map[string]uint64{}
	var check uint64
	for rep := range opts.Repeats {
		if err := ctx.Err(); err != nil {
			return err
		}
		for i := range consumers {
			name := consumers[(i+rep)%len(consumers)] // rotate who goes first
			t, err := b.drainOnce(name)
			if err != nil {
				return fmt.Errorf("%s drain: %w", name, err)
			}
			rates[name] = append(rates[name], float64(t.records)/t.elapsed.Seconds())
			mallocs[name] += t.mallocs
			records[name] += t.records
			check += t.check
		}
	}
	for name, rs := range rates {
		sorted := slices.Sorted(slices.Values(rs))
		res.Drain[name] = Rate{Median: median(sorted), Min: sorted[0], Max: sorted[len(sorted)-1]}
	}
	allocs := func(name string) float64 { return float64(mallocs[name]) / float64(records[name]) }
	res.AllocsPerRec = allocs(Ours)
	fmt.Fprintf(log, "size=%d drain of %d records (ring %d MiB) x %d, median [min-max]:", size, b.records, opts.RingBytes>>20, opts.Repeats)
	for _, name := range consumers {
		r := res.Drain[name]
		fmt.Fprintf(log, " %s=%.1fM/s [%.1f-%.1f]", name, r.Median/1e6, r.Min/1e6, r.Max/1e6)
	}
	fmt.Fprintf(log, " (checksums %#x)\n", check)
	for _, rd := range Reads {
		l := Line{
			Read: rd.Name, Ours: rd.Ours, Libbpf: rd.Libbpf, Cilium: rd.Cilium,
			OursRate: res.Drain[rd.Ours].Median, LibbpfRate: res.Drain[rd.Libbpf].Median, CiliumRate: res.Drain[rd.Cilium].Median,
			VsLibbpf:        pairedRatio(rates[rd.Ours], rates[rd.Libbpf]),
			VsCilium:        pairedRatio(rates[rd.Ours], rates[rd.Cilium]),
			AllocsPerRecord: allocs(rd.Ours),
		}
		if rd.Goals {
			l.Goals = l.judge()
		}
		res.Lines = append(res.Lines, l)
	}
	return nil
}

// judge says whether the line meets the goals: see verdict.
func (l Line) judge() string {
	return verdict([]goal{{"ours/libbpf", l.VsLibbpf, GoalVsLibbpf}, {"ours/cilium", l.VsCilium, GoalVsCilium}}, l.AllocsPerRecord)
}

// goal is a ratio and the least it should be.
type goal struct {
	name string
	r    Ratio
	min  float64
}

// verdict is "met" when every ratio's interval lies at or above its goal
// and the allocations are nil; otherwise "missed:" and what is missed (the
// interval below the goal), and what is not shown (the interval
// straddles it), or only "unclear:" and the latter.
func verdict(goals []goal, allocsPerRecord float64) string {
	var missed, unclear []string
	for _, g := range goals {
		switch {
		case g.r.Upper < g.min:
			missed = append(missed, fmt.Sprintf("%s<%.1f", g.name, g.min))
		case g.r.Lower < g.min:
			unclear = append(unclear, fmt.Sprintf("%s~%.1f", g.name, g.min))
		}
	}
	if allocsPerRecord >= GoalAllocs {
		missed = append(missed, "allocs/record>0")
	}
	switch {
	case len(missed) > 0:
		return "missed:" + strings.Join(append(missed, unclear...), ",")
	case len(unclear) > 0:
		return "unclear:" + strings.Join(unclear, ",")
	}
	return "met"
}

// pairedRatio returns the median of a[i]/b[i], the rates of two consumers
// in the same repeat, with its confidence interval.
func pairedRatio(a, b []float64) Ratio {
	rs := make([]float64, 0, len(a))
	for i := range min(len(a), len(b)) {
		rs = append(rs, a[i]/b[i])
	}
	if len(rs) == 0 {
		return Ratio{}
	}
	slices.Sort(rs)
	k, conf := medianInterval(len(rs), Confidence)
	return Ratio{Median: median(rs), Lower: rs[k], Upper: rs[len(rs)-1-k], Confidence: conf}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// medianInterval returns the index k (from 0) such that the k-th smallest
// and the k-th largest of n samples bound their median with at least
// confidence conf, the largest such k, and the confidence that interval
// has: P(k < B < n−k) for B binomial(n, ½), which holds whatever the
// distribution. With too few samples for conf, k is 0 (the range) and the
// confidence is lower than conf.
func medianInterval(n int, conf float64) (k int, got float64) {
	// cdf[i] = P(B ≤ i).
	cdf, p := make([]float64, n+1), math.Exp2(-float64(n))
	for i := 0; i <= n; i++ {
		if i > 0 {
			p *= float64(n-i+1) / float64(i)
			cdf[i] = cdf[i-1]
		}
		cdf[i] += p
	}
	for k+1 < n-1-(k+1) && 1-2*cdf[k+1] >= conf {
		k++
	}
	return k, 1 - 2*cdf[k]
}

// fill has the producer emit a full ring and returns the sum of the
// records' sequence numbers.
func (b *bench) fill(n uint64) (uint64, error) {
	first, err := b.p.NextSeq()
	if err != nil {
		return 0, err
	}
	if _, err := b.lost.Delta(); err != nil {
		return 0, err
	}
	b.prod.do(func() { err = b.p.Produce(int(n)) })
	if err != nil {
		return 0, err
	}
	if d, err := b.lost.Delta(); err != nil {
		return 0, err
	} else if d != 0 {
		return 0, fmt.Errorf("filling the ring lost %d records: was it not empty?", d)
	}
	return n*first + n*(n-1)/2, nil
}

func (b *bench) drainOnce(name string) (tally, error) {
	want, err := b.fill(b.records)
	if err != nil {
		return tally{}, err
	}
	var t tally
	switch name {
	case Ours, OursReadBatch, OursReadInto, OursChecksum:
		var rd *ringbuf.Reader
		if rd, err = ringbuf.NewReader(b.p.Events()); err != nil {
			return t, err
		}
		defer rd.Close()
		b.cons.do(func() { t, err = drainOurs(rd, b.records, name) })
	case Cilium, CiliumChecksum:
		var rd *ciliumringbuf.Reader
		if rd, err = ciliumringbuf.NewReader(b.p.Events()); err != nil {
			return t, err
		}
		defer rd.Close()
		b.cons.do(func() { t, err = drainCilium(rd, b.records, name == CiliumChecksum) })
	case Libbpf, LibbpfChecksum:
		t, err = b.libbpf.drain(b.records, name == LibbpfChecksum)
	}
	if err != nil {
		return t, err
	}
	if t.records != b.records || t.sum != want {
		return t, fmt.Errorf("read %d records (sum of seqs %d), want %d (sum %d)", t.records, t.sum, b.records, want)
	}
	return t, nil
}

func drainOurs(rd *ringbuf.Reader, n uint64, api string) (tally, error) {
	var t tally
	fn := func(rec []byte) error {
		t.records++
		t.sum += binary.NativeEndian.Uint64(rec)
		return nil
	}
	var rec ringbuf.Record
	rec.RawSample = make([]byte, 0, 4096)

	var b ringbuf.Batch

	// Only the reading is counted, not the buffers set up above.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.Mallocs
	start := time.Now()
	switch api {
	case Ours, OursChecksum:
		var err error
		t.records, t.sum, t.check, err = drainBatches(rd, &b, n, api == OursChecksum)
		if err != nil {
			return t, err
		}
	case OursReadBatch:
		for t.records < n {
			if _, err := rd.ReadBatch(fn); err != nil {
				return t, err
			}
		}
	case OursReadInto:
		for t.records < n {
			if err := rd.ReadInto(&rec); err != nil {
				return t, err
			}
			t.records++
			t.sum += binary.NativeEndian.Uint64(rec.RawSample)
		}
	}
	t.elapsed = time.Since(start)

	runtime.ReadMemStats(&ms)
	t.mallocs = ms.Mallocs - before
	return t, nil
}

// drainBatches reads n records or more with NextBatch, each record's
// first 8 bytes, and with whole every byte (checksum). A function of its
// own, so that the compiler keeps its tallies in registers: what a loop
// over NextBatch does, and a callback such as libbpf's cannot.
func drainBatches(rd *ringbuf.Reader, b *ringbuf.Batch, n uint64, whole bool) (records, sum, check uint64, err error) {
	for records < n {
		if err := rd.NextBatch(b); err != nil {
			return records, sum, check, err
		}
		for rec := b.Next(); rec != nil; rec = b.Next() {
			records++
			sum += binary.NativeEndian.Uint64(rec)
			if whole {
				if len(rec) < 32 {
					check += checksumShort(rec)
				} else {
					check += checksum(rec)
				}
			}
		}
	}
	b.Release()
	return records, sum, check, nil
}

func drainCilium(rd *ciliumringbuf.Reader, n uint64, whole bool) (tally, error) {
	var t tally
	var rec ciliumringbuf.Record
	rec.RawSample = make([]byte, 0, 4096)
	start := time.Now()
	for t.records < n {
		if err := rd.ReadInto(&rec); err != nil {
			return t, err
		}
		t.records++
		t.sum += binary.NativeEndian.Uint64(rec.RawSample)
		if whole {
			if rec := rec.RawSample; len(rec) < 32 {
				t.check += checksumShort(rec)
			} else {
				t.check += checksum(rec)
			}
		}
	}
	t.elapsed = time.Since(start)
	return t, nil
}

// liveOnce runs the producer at its top rate for opts.Live while the
// consumer reads.
func (b *bench) liveOnce(name string) (LiveResult, error) {
	var lr LiveResult
	if n := b.available(); n != 0 {
		return lr, fmt.Errorf("ring not empty before the live run: %d bytes", n)
	}
	if err := b.p.SetSamplesPerTrigger(b.opts.LiveBatch); err != nil {
		return lr, err
	}
	first, err := b.p.NextSeq()
	if err != nil {
		return lr, err
	}
	if _, err := b.lost.Delta(); err != nil {
		return lr, err
	}

	var (
		t       tally
		consErr error
		done    = make(chan struct{})
		stopped atomic.Bool // the producer is done
		flush   func() error
	)
	switch name {
	case Ours:
		rd, err := ringbuf.NewReader(b.p.Events())
		if err != nil {
			return lr, err
		}
		defer rd.Close()
		flush = rd.Flush
		go b.cons.do(func() {
			defer close(done)
			var batch ringbuf.Batch
			for {
				err := rd.NextBatch(&batch)
				if errors.Is(err, ringbuf.ErrFlushed) && stopped.Load() {
					return
				}
				if err != nil && !errors.Is(err, ringbuf.ErrFlushed) {
					consErr = err
					return
				}
				for rec := batch.Next(); rec != nil; rec = batch.Next() {
					t.records++
					t.sum += binary.NativeEndian.Uint64(rec)
				}
			}
		})
	case Cilium:
		rd, err := ciliumringbuf.NewReader(b.p.Events())
		if err != nil {
			return lr, err
		}
		defer rd.Close()
		flush = rd.Flush
		go b.cons.do(func() {
			defer close(done)
			var rec ciliumringbuf.Record
			for {
				err := rd.ReadInto(&rec)
				if errors.Is(err, ciliumringbuf.ErrFlushed) && stopped.Load() {
					return
				}
				if err != nil {
					if !errors.Is(err, ciliumringbuf.ErrFlushed) {
						consErr = err
						return
					}
					continue
				}
				t.records++
				t.sum += binary.NativeEndian.Uint64(rec.RawSample)
			}
		})
	case Libbpf:
		// The consumer polls a little longer than the producer runs,
		// then until the ring is empty.
		if err := b.libbpf.live(b.opts.Live + 500*time.Millisecond); err != nil {
			return lr, err
		}
		go func() {
			defer close(done)
			t, consErr = b.libbpf.result()
		}()
	}

	// The producer: getppid(2) in a loop, pinned to its own CPU.
	var elapsed time.Duration
	b.prod.do(func() {
		start := time.Now()
		for {
			Trigger(64)
			if elapsed = time.Since(start); elapsed >= b.opts.Live {
				return
			}
		}
	})
	stopped.Store(true)
	if flush != nil {
		if err := flush(); err != nil {
			return lr, err
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return lr, fmt.Errorf("consumer did not finish")
	}
	if consErr != nil {
		return lr, consErr
	}

	last, err := b.p.NextSeq()
	if err != nil {
		return lr, err
	}
	lostN, err := b.lost.Delta()
	if err != nil {
		return lr, err
	}
	// Sequence numbers only go to records that were reserved.
	reserved := last - first
	lr = LiveResult{Produced: reserved + lostN, Received: t.records, Lost: lostN, Rate: float64(reserved+lostN) / elapsed.Seconds()}
	if lr.Received != reserved || t.sum != reserved*first+reserved*(reserved-1)/2 {
		return lr, fmt.Errorf("received %d records (sum of seqs %d), but %d were reserved (from seq %d)", lr.Received, t.sum, reserved, first)
	}
	return lr, nil
}

func (b *bench) available() int {
	rd, err := ringbuf.NewReader(b.p.Events())
	if err != nil {
		return -1
	}
	defer rd.Close()
	return rd.AvailableBytes()
}

// bpfCost measures the producer's run time per invocation, with n records
// per invocation, over opts.CostEvents invocations, draining the ring in
// between so that no reservation fails. The run time of the baseline
// program on the same tracepoint, measured over the same invocations, is
// subtracted: it is what every program there pays for the hook and for
// the run time stats (two clock reads), not the producer's own work.
func (b *bench) bpfCost(n uint32) (float64, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return 0, fmt.Errorf("enabling BPF run time stats (BPF_ENABLE_STATS, like sysctl kernel.bpf_stats_enabled=1): %w", err)
	}
	defer stats.Close()
	if err := b.p.SetSamplesPerTrigger(n); err != nil {
		return 0, err
	}
	rd, err := ringbuf.NewReader(b.p.Events())
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	prog, base := b.p.ProduceProgram(), b.p.BaselineProgram()
	before, err := prog.Stats()
	if err != nil {
		return 0, fmt.Errorf("reading program stats: %w", err)
	}
	baseBefore, err := base.Stats()
	if err != nil {
		return 0, fmt.Errorf("reading baseline stats: %w", err)
	}
	chunk := int(b.records/2) / int(n)
	if chunk < 1 {
		chunk = 1
	}
	for done := 0; done < b.opts.CostEvents; done += chunk {
		var want uint64
		b.prod.do(func() { Trigger(chunk) })
		want = uint64(chunk) * uint64(n)
		var got uint64
		rd.SetDeadline(time.Now().Add(5 * time.Second))
		for got < want {
			k, err := rd.ReadBatch(func([]byte) error { return nil })
			if err != nil {
				return 0, fmt.Errorf("draining: %w", err)
			}
			got += uint64(k)
		}
	}
	after, err := prog.Stats()
	if err != nil {
		return 0, fmt.Errorf("reading program stats: %w", err)
	}
	baseAfter, err := base.Stats()
	if err != nil {
		return 0, fmt.Errorf("reading baseline stats: %w", err)
	}
	if d, err := b.lost.Delta(); err != nil {
		return 0, err
	} else if d != 0 {
		return 0, fmt.Errorf("%d records lost while measuring the BPF cost", d)
	}
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		return 0, fmt.Errorf("the producer did not run")
	}
	baseRuns := baseAfter.RunCount - baseBefore.RunCount
	if baseRuns == 0 {
		return 0, fmt.Errorf("the baseline did not run")
	}
	own := float64(after.Runtime-before.Runtime) / float64(runs)
	overhead := float64(baseAfter.Runtime-baseBefore.Runtime) / float64(baseRuns)
	return own - overhead, nil
}

// worker runs functions on one OS thread, pinned to a CPU.
type worker struct {
	fns chan func()
}

func newWorker(cpu int) (*worker, error) {
	w := &worker{fns: make(chan func())}
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errc <- fmt.Errorf("pinning a thread to CPU %d: %w", cpu, err)
				return
			}
		}
		errc <- nil
		for fn := range w.fns {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return w, nil
}

func (w *worker) do(fn func()) {
	done := make(chan struct{})
	w.fns <- func() {
		defer close(done)
		fn()
	}
	<-done
}

func (w *worker) stop() { close(w.fns) }
