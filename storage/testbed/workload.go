package testbed

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Workload names one of the testbed's workloads.
type Workload string

// The workloads.
const (
	Seq    Workload = "seq"    // sequential 128 KiB reads, 8 MiB per open
	Random Workload = "random" // 4 KiB preads at random offsets
	Mmap   Workload = "mmap"   // random page faults in a read-only mapping
	Phased Workload = "phased" // seq, random, mmap in turn, a fixed amount of work each
)

// Workloads lists every workload.
var Workloads = []Workload{Seq, Random, Mmap, Phased}

// ParseWorkload returns the workload named s.
func ParseWorkload(s string) (Workload, error) {
	for _, w := range Workloads {
		if string(w) == s {
			return w, nil
		}
	}
	return "", fmt.Errorf("unknown workload %q: use seq, random, mmap or phased", s)
}

// Phased is a job that scans, then looks up, then faults, over and over:
// one cycle reads phaseSeqSegments segments sequentially, makes
// phaseRandomOpens rounds of random preads, then phaseMmapOpens rounds of
// random page faults, each segment and round opening its file afresh as
// a separate program would. A phase is its work, not a time: its figure
// is the job's throughput, so a slow phase counts for the time it takes
// (under phases of fixed time the bytes of the fastest phase would
// decide every figure). PhaseLength caps a phase, for settings that make
// one crawl: a phase cut short counts in Stats for the time its whole
// work would have taken at the rate it ran.
const (
	phaseSeqSegments = 4
	phaseRandomOpens = 1
	phaseMmapOpens   = 4
)

// PhaseLength is the most one phase of Phased lasts.
var PhaseLength = 4 * time.Second

const (
	seqFile  = "seq.dat"
	randFile = "rand.dat"
	pageSize = 4096
	// opsPerOpen is how many random reads or faults a workload makes
	// before it reopens its file (and drops the file's cache).
	opsPerOpen = 64
)

// Stats is what one run of a workload did.
type Stats struct {
	// Bytes is what the workload asked for: bytes returned by read, or a
	// page per fault.
	Bytes   int64
	Ops     int64
	Elapsed time.Duration
}

// MBps returns the bytes asked for per second, in MB/s.
func (s Stats) MBps() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Elapsed.Seconds() / 1e6
}

// Run runs workload w on the testbed for d (or until ctx ends), starting
// from a cold cache; Phased runs whole cycles until d has passed. If progress is not nil, the bytes asked for are
// added to it as they are read, so that a caller can watch throughput.
func (tb *Testbed) Run(ctx context.Context, w Workload, d time.Duration, progress *atomic.Int64) (Stats, error) {
	if err := tb.DropCache(); err != nil {
		return Stats{}, err
	}
	if w != Phased {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if progress == nil {
		progress = new(atomic.Int64)
	}
	start := time.Now()
	before := progress.Load()
	var ops, extraBytes int64
	var extra time.Duration
	var err error
	switch w {
	case Seq, Random, Mmap:
		ops, err = tb.runOne(ctx, w, 0, progress)
	case Phased:
		phases := []struct {
			w     Workload
			opens int
		}{{Seq, phaseSeqSegments}, {Random, phaseRandomOpens}, {Mmap, phaseMmapOpens}}
		for i := 0; ctx.Err() == nil && err == nil && (i%3 != 0 || time.Since(start) < d); i++ {
			p := phases[i%3]
			pctx, pcancel := context.WithTimeout(ctx, PhaseLength)
			b0, t0 := progress.Load(), time.Now()
			var n int64
			n, err = tb.runOne(pctx, p.w, p.opens, progress)
			cut := pctx.Err() != nil && ctx.Err() == nil
			pcancel()
			ops += n
			// A phase cut short by PhaseLength counts for the time its
			// whole work takes at the rate it ran.
			if done, work := progress.Load()-b0, phaseWork(p.w, p.opens); cut && err == nil && done < work {
				el := time.Since(t0)
				extra += time.Duration(float64(el) * float64(work-done) / float64(max(done, pageSize)))
				extraBytes += work - done
			}
		}
	default:
		return Stats{}, fmt.Errorf("running workload: unknown workload %q", w)
	}
	st := Stats{Bytes: progress.Load() - before + extraBytes, Ops: ops, Elapsed: time.Since(start) + extra}
	return st, err
}

// phaseWork is the bytes a phase of Phased asks for: opens rounds of w.
func phaseWork(w Workload, opens int) int64 {
	if w == Seq {
		return int64(opens) * seqSegment
	}
	return int64(opens) * opsPerOpen * pageSize
}

// runOne runs w until ctx ends or, if opens > 0, until it has opened its
// file that many times.
func (tb *Testbed) runOne(ctx context.Context, w Workload, opens int, progress *atomic.Int64) (int64, error) {
	var ops int64
	for i := 0; ctx.Err() == nil && (opens == 0 || i < opens); i++ {
		var n int64
		var err error
		switch w {
		case Seq:
			n, err = readSequential(ctx, filepath.Join(tb.Mount, seqFile), &tb.segment, progress)
		case Random:
			n, err = readRandom(ctx, filepath.Join(tb.Mount, randFile), progress)
		case Mmap:
			n, err = faultRandom(ctx, filepath.Join(tb.Mount, randFile), progress)
		}
		ops += n
		if err != nil {
			return ops, fmt.Errorf("running workload %s: %w", w, err)
		}
	}
	return ops, nil
}

// openCold opens path after dropping its pages, so every pass reads the
// device and picks up the device's current readahead setting.
func openCold(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openColdPages is openCold that also returns the file's size in pages.
func openColdPages(path string) (*os.File, int64, error) {
	f, err := openCold(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size() / pageSize, nil
}

// seqSegment is how much readSequential reads per open.
const seqSegment = 8 << 20

// readSequential reads the next segment of the file (wrapping at its
// end), sequentially.
func readSequential(ctx context.Context, path string, segment *atomic.Int64, progress *atomic.Int64) (int64, error) {
	f, pages, err := openColdPages(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	segs := max(pages*pageSize/seqSegment, 1)
	if _, err := f.Seek((segment.Add(1)%segs)*seqSegment, io.SeekStart); err != nil {
		return 0, err
	}
	r := io.LimitReader(f, seqSegment)
	buf := make([]byte, 128<<10)
	var ops int64
	for ctx.Err() == nil {
		n, err := r.Read(buf)
		progress.Add(int64(n))
		ops++
		if err == io.EOF {
			return ops, nil
		}
		if err != nil {
			return ops, err
		}
	}
	return ops, nil
}

func readRandom(ctx context.Context, path string, progress *atomic.Int64) (int64, error) {
	f, pages, err := openColdPages(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, pageSize)
	var ops int64
	for ; ops < opsPerOpen && ctx.Err() == nil; ops++ {
		n, err := f.ReadAt(buf, rand.Int64N(pages)*pageSize)
		progress.Add(int64(n))
		if err != nil {
			return ops, err
		}
	}
	return ops, nil
}

func faultRandom(ctx context.Context, path string, progress *atomic.Int64) (int64, error) {
	f, pages, err := openColdPages(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(pages*pageSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	var ops int64
	var sum byte
	for ; ops < opsPerOpen && ctx.Err() == nil; ops++ {
		sum += m[rand.Int64N(pages)*pageSize]
		progress.Add(pageSize)
	}
	sink.Store(int32(sum))
	return ops, nil
}

// sink keeps the faulting reads from being optimised away.
var sink atomic.Int32
