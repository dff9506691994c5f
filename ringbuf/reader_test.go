package ringbuf_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	ciliumringbuf "github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/ringbench"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/ringbuf"
)

func TestMain(m *testing.M) {
	before := testutil.OpenFDs()
	code := m.Run()
	if code == 0 {
		if after := testutil.OpenFDs(); after > before {
			fmt.Fprintf(os.Stderr, "leaked %d file descriptors\n", after-before)
			code = 1
		}
	}
	os.Exit(code)
}

// newProducer loads the test and benchmark producer with a ring of
// ringBytes, skipping the test if this process or kernel cannot.
func newProducer(tb testing.TB, ringBytes uint32) *ringbench.Producer {
	tb.Helper()
	testutil.RequireBPF(tb)
	p, err := ringbench.NewProducer(ringbench.Config{RingBytes: ringBytes})
	testutil.SkipIfNotSupported(tb, "BPF ring buffer maps (BPF_MAP_TYPE_RINGBUF, 5.8) or bpf_loop (5.17)", err)
	tb.Cleanup(func() { p.Close() })
	return p
}

// emit runs the test producer, skipping if BPF_PROG_TEST_RUN of raw_tp
// programs is missing.
func emit(tb testing.TB, p *ringbench.Producer, args ringbench.EmitArgs) {
	tb.Helper()
	if args.Kind == 0 {
		args.Kind = kindBench
	}
	_, err := p.Emit(args)
	testutil.SkipIfNotSupported(tb, "BPF_PROG_TEST_RUN for raw_tp programs (5.10)", err)
}

func newReader(tb testing.TB, m *ebpf.Map) *ringbuf.Reader {
	tb.Helper()
	r, err := ringbuf.NewReader(m)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

const kindBench = 3 // MLBPF_REC_BENCH

var seqOffset = int(unsafe.Offsetof(ringbench.TestRecord{}.Seq))

// checkRecord returns the sequence number of a test record, after checking
// its size and, for records of 40 bytes or more, the copy of the sequence
// number in its last aligned 8 bytes.
func checkRecord(tb testing.TB, rec []byte, size int) uint64 {
	tb.Helper()
	if len(rec) != size {
		tb.Fatalf("record of %d bytes, want %d", len(rec), size)
	}
	seq := binary.NativeEndian.Uint64(rec[seqOffset:])
	if tail := (size - 8) &^ 7; tail >= seqOffset+8 {
		if got := binary.NativeEndian.Uint64(rec[tail:]); got != seq {
			tb.Fatalf("record %d: tail at offset %d holds %d", seq, tail, got)
		}
	}
	return seq
}

// wantSeqs lists the sequence numbers of the records emit writes (the
// discarded ones left out).
func wantSeqs(first, count, discardEvery uint64) []uint64 {
	var out []uint64
	for s := first; s < first+count; s++ {
		if discardEvery != 0 && s%discardEvery == discardEvery-1 {
			continue
		}
		out = append(out, s)
	}
	return out
}

func equalSeqs(tb testing.TB, got, want []uint64) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			tb.Fatalf("record %d has seq %d, want %d (out of order or lost)", i, got[i], want[i])
		}
	}
}

func TestReadBatchInProduceOrder(t *testing.T) {
	p := newProducer(t, 1<<16)
	r := newReader(t, p.Events())
	const size, count, every = 48, 600, 7
	emit(t, p, ringbench.EmitArgs{Count: count, Size: size, DiscardEvery: every})

	want := wantSeqs(0, count, every)
	var got []uint64
	r.SetDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(want) {
		n, err := r.ReadBatch(func(rec []byte) error {
			got = append(got, checkRecord(t, rec, size))
			return nil
		})
		if err != nil {
			t.Fatalf("after %d records: %v", len(got), err)
		}
		if n == 0 {
			t.Fatal("ReadBatch returned no record and no error")
		}
	}
	equalSeqs(t, got, want)
	if n := r.AvailableBytes(); n != 0 {
		t.Fatalf("AvailableBytes = %d after reading everything", n)
	}
}

func TestReadIntoInProduceOrder(t *testing.T) {
	p := newProducer(t, 1<<16)
	r := newReader(t, p.Events())
	const size, count, every = 72, 498, 5
	emit(t, p, ringbench.EmitArgs{Count: count, Size: size, DiscardEvery: every})

	want := wantSeqs(0, count, every)
	var got []uint64
	var rec ringbuf.Record
	r.SetDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(want) {
		if err := r.ReadInto(&rec); err != nil {
			t.Fatalf("after %d records: %v", len(got), err)
		}
		got = append(got, checkRecord(t, rec.RawSample, size))
	}
	equalSeqs(t, got, want)
	if rec.Remaining != 0 {
		t.Fatalf("Remaining = %d after the last record", rec.Remaining)
	}
	if n := r.AvailableBytes(); n != 0 {
		t.Fatalf("AvailableBytes = %d after reading everything", n)
	}
}

// TestWrapAround runs records of sizes that do not divide the ring through
// a one-page ring many times, so that records straddle its end, and reads
// them with both APIs.
func TestWrapAround(t *testing.T) {
	page := os.Getpagesize()
	p := newProducer(t, uint32(page))
	r := newReader(t, p.Events())
	r.SetDeadline(time.Now().Add(10 * time.Second))

	var (
		seq, pos  uint64
		straddled int
		rec       ringbuf.Record
	)
	sizes := []uint64{40, 200, 1000, 72, 1, 33, 56}
	for round := range 300 {
		size := sizes[round%len(sizes)]
		if size < 32 {
			size = 32 + size
		}
		count := uint64(page) / 2 / (size + 8)
		if count == 0 {
			count = 1
		}
		emit(t, p, ringbench.EmitArgs{Count: count, Size: size, FirstSeq: seq})
		for i := range count {
			span := (8 + size + 7) &^ 7
			if pos%uint64(page)+span > uint64(page) {
				straddled++
			}
			pos += span
			var got uint64
			if round%2 == 0 {
				if err := r.ReadInto(&rec); err != nil {
					t.Fatal(err)
				}
				got = checkRecord(t, rec.RawSample, int(size))
			} else {
				n, err := r.ReadBatch(func(b []byte) error {
					got = checkRecord(t, b, int(size))
					return errStop // one record at a time
				})
				if !errors.Is(err, errStop) || n != 1 {
					t.Fatalf("ReadBatch = %d, %v", n, err)
				}
			}
			if got != seq+i {
				t.Fatalf("round %d: seq %d, want %d", round, got, seq+i)
			}
		}
		seq += count
	}
	if straddled < 10 {
		t.Fatalf("only %d records straddled the end of the ring", straddled)
	}
	t.Logf("%d records, %d straddling the end of the ring", seq, straddled)
}

var errStop = errors.New("stop")

func TestReadBatchCallbackError(t *testing.T) {
	p := newProducer(t, 1<<16)
	r := newReader(t, p.Events())
	emit(t, p, ringbench.EmitArgs{Count: 10, Size: 32})

	calls := 0
	n, err := r.ReadBatch(func([]byte) error {
		calls++
		if calls == 4 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || n != 4 {
		t.Fatalf("ReadBatch = %d, %v; want 4, errStop", n, err)
	}
	// The record fn failed on counts as read: the next batch starts at seq 4.
	var first uint64 = 99
	n, err = r.ReadBatch(func(b []byte) error {
		if first == 99 {
			first = checkRecord(t, b, 32)
		}
		return nil
	})
	if err != nil || n != 6 || first != 4 {
		t.Fatalf("second ReadBatch = %d, %v, first seq %d; want 6, nil, 4", n, err, first)
	}
}

func TestCloseUnblocksPendingRead(t *testing.T) {
	for _, api := range []string{"ReadInto", "ReadBatch"} {
		t.Run(api, func(t *testing.T) {
			p := newProducer(t, 1<<16)
			r, err := ringbuf.NewReader(p.Events())
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				if api == "ReadInto" {
					var rec ringbuf.Record
					done <- r.ReadInto(&rec)
				} else {
					_, err := r.ReadBatch(func([]byte) error { return nil })
					done <- err
				}
			}()
			select {
			case err := <-done:
				t.Fatalf("read returned before Close: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("pending read returned %v, want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not unblock the pending read")
			}
			if _, err := r.Read(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("read after Close: %v, want os.ErrClosed", err)
			}
			if err := r.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := r.Flush(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Flush after Close: %v, want os.ErrClosed", err)
			}
			if n := r.AvailableBytes(); n != 0 {
				t.Fatalf("AvailableBytes after Close = %d", n)
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	p := newProducer(t, 1<<16)
	r, epfd := watchedReader(t, p.Events())

	t.Run("empty ring", func(t *testing.T) {
		start := time.Now()
		r.SetDeadline(start.Add(50 * time.Millisecond))
		_, err := r.Read()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v, want os.ErrDeadlineExceeded", err)
		}
		if el := time.Since(start); el < 45*time.Millisecond || el > 10*time.Second {
			t.Fatalf("Read returned after %v, want about 50ms", el)
		}
		// A passed deadline keeps failing reads at once.
		if _, err := r.ReadBatch(func([]byte) error { return nil }); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadBatch = %v, want os.ErrDeadlineExceeded", err)
		}
	})

	t.Run("records first", func(t *testing.T) {
		emit(t, p, ringbench.EmitArgs{Count: 3, Size: 32, FirstSeq: 100})
		r.SetDeadline(time.Now().Add(-time.Second))
		for i := range uint64(3) {
			rec, err := r.Read()
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if seq := checkRecord(t, rec.RawSample, 32); seq != 100+i {
				t.Fatalf("seq %d, want %d", seq, 100+i)
			}
		}
		if _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read on the empty ring = %v, want os.ErrDeadlineExceeded", err)
		}
	})

	t.Run("moved while pending", func(t *testing.T) {
		r.SetDeadline(time.Now().Add(time.Hour))
		done := make(chan error, 1)
		go func() {
			_, err := r.Read()
			done <- err
		}()
		waitPending(t, epfd)
		r.SetDeadline(time.Now())
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read = %v, want os.ErrDeadlineExceeded", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("moving the deadline did not reach the pending read")
		}
	})

	t.Run("cleared", func(t *testing.T) {
		r.SetDeadline(time.Time{})
		done := make(chan error, 1)
		go func() {
			_, err := r.Read()
			done <- err
		}()
		waitPending(t, epfd)
		emit(t, p, ringbench.EmitArgs{Count: 1, Size: 32})
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Read = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a committed record did not wake the pending read")
		}
	})
}

// TestFlush: records committed without a wake-up leave a pending read
// waiting; Flush makes it return them, and ErrFlushed once the ring is
// empty.
func TestFlush(t *testing.T) {
	p := newProducer(t, 1<<16)
	r, epfd := watchedReader(t, p.Events())
	r.SetDeadline(time.Now().Add(time.Hour))

	type result struct {
		seqs []uint64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var res result
		_, res.err = r.ReadBatch(func(b []byte) error {
			res.seqs = append(res.seqs, checkRecord(t, b, 64))
			return nil
		})
		done <- res
	}()
	waitPending(t, epfd)
	emit(t, p, ringbench.EmitArgs{Count: 5, Size: 64, Flags: unix.BPF_RB_NO_WAKEUP})
	select {
	case res := <-done:
		t.Fatalf("the pending read returned without a wake-up: %v, %v", res.seqs, res.err)
	case <-time.After(100 * time.Millisecond):
	}
	if !blockedIn(t, epfd) {
		t.Fatal("the read is no longer waiting, yet has not returned")
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("flushed ReadBatch: %v", res.err)
		}
		equalSeqs(t, res.seqs, wantSeqs(0, 5, 0))
	case <-time.After(10 * time.Second):
		t.Fatal("Flush did not reach the pending read")
	}
	// The flush is reported once the ring is empty.
	if _, err := r.Read(); !errors.Is(err, ringbuf.ErrFlushed) {
		t.Fatalf("Read after the flushed records = %v, want ErrFlushed", err)
	}

	// Flush without a pending read: the next read on an empty ring says so.
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(); !errors.Is(err, ringbuf.ErrFlushed) {
		t.Fatalf("Read = %v, want ErrFlushed", err)
	}
}

func TestLostRecordsCounted(t *testing.T) {
	page := os.Getpagesize()
	p := newProducer(t, uint32(page))
	lost, err := ringbuf.NewLostCounter(p.Lost())
	if err != nil {
		t.Fatal(err)
	}
	r := newReader(t, p.Events())
	const count, size = 500, 64
	emit(t, p, ringbench.EmitArgs{Count: count, Size: size})

	fits := (page - 8) / (size + 8) // the kernel keeps one slot short of full
	r.SetDeadline(time.Now().Add(-time.Second))
	var got []uint64
	for {
		_, err := r.ReadBatch(func(b []byte) error {
			got = append(got, checkRecord(t, b, size))
			return nil
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	equalSeqs(t, got, wantSeqs(0, uint64(fits), 0))
	d, err := lost.Delta()
	if err != nil {
		t.Fatal(err)
	}
	if d != count-uint64(fits) {
		t.Fatalf("lost %d records, want %d (%d emitted, %d received)", d, count-fits, count, len(got))
	}
	if d, _ := lost.Delta(); d != 0 {
		t.Fatalf("second Delta = %d, want 0", d)
	}
	if tot, _ := lost.Total(); tot != count-uint64(fits) {
		t.Fatalf("Total = %d, want %d", tot, count-fits)
	}
}

// TestAllocationsPerRecord: reading allocates nothing per record, with
// any of the three reads. Only the reads are counted, not the producer
// (prog.Run allocates): at most one allocation in a run of perRun records
// is allowed, for what the runtime may do meanwhile; an allocation per
// record makes perRun.
func TestAllocationsPerRecord(t *testing.T) {
	p := newProducer(t, 1<<20)
	r := newReader(t, p.Events())
	const runs, perRun = 20, 1000
	var sum uint64
	var rec ringbuf.Record
	rec.RawSample = make([]byte, 0, 256)
	var b ringbuf.Batch
	for _, read := range []struct {
		name string
		fn   func() int // reads what is in the ring, returns how many
	}{
		{"ReadBatch", func() int {
			n, err := r.ReadBatch(func(b []byte) error {
				sum += binary.NativeEndian.Uint64(b[seqOffset:])
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}},
		{"ReadInto", func() int {
			if err := r.ReadInto(&rec); err != nil {
				t.Fatal(err)
			}
			sum += binary.NativeEndian.Uint64(rec.RawSample[seqOffset:])
			return 1
		}},
		{"NextBatch", func() int {
			if err := r.NextBatch(&b); err != nil {
				t.Fatal(err)
			}
			n := 0
			for rec := b.Next(); rec != nil; rec = b.Next() {
				sum += binary.NativeEndian.Uint64(rec[seqOffset:])
				n++
			}
			b.Release()
			return n
		}},
	} {
		mallocs := readAllocs(runs, func() { emit(t, p, ringbench.EmitArgs{Count: perRun, Size: 64}) }, func() {
			for got := 0; got < perRun; {
				got += read.fn()
			}
		})
		t.Logf("%s: %d allocations reading %d runs of %d records", read.name, mallocs, runs, perRun)
		if mallocs > runs {
			t.Errorf("%s allocates: %d allocations reading %d records (%.3f per record), want at most one per run of %d",
				read.name, mallocs, runs*perRun, float64(mallocs)/(runs*perRun), perRun)
		}
	}
}

// readAllocs counts the heap allocations of read over runs runs (after a
// warm-up run), each after fill, which is not counted.
func readAllocs(runs int, fill, read func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fill()
	read()
	var total uint64
	var before, after runtime.MemStats
	for range runs {
		fill()
		runtime.ReadMemStats(&before)
		read()
		runtime.ReadMemStats(&after)
		total += after.Mallocs - before.Mallocs
	}
	return total
}

func TestNewReaderRefusesOtherMaps(t *testing.T) {
	testutil.RequireBPF(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if r, err := ringbuf.NewReader(m); err == nil {
		r.Close()
		t.Fatal("NewReader accepted an array map")
	}
	if _, err := ringbuf.NewLostCounter(m); err == nil {
		t.Fatal("NewLostCounter accepted an array of 1 x 8 bytes that is not per-CPU")
	}
}

func TestSizeAndAvailableBytes(t *testing.T) {
	p := newProducer(t, 1<<16)
	r := newReader(t, p.Events())
	if r.Size() != 1<<16 || r.BufferSize() != 1<<16 {
		t.Fatalf("Size = %d, BufferSize = %d, want %d", r.Size(), r.BufferSize(), 1<<16)
	}
	emit(t, p, ringbench.EmitArgs{Count: 10, Size: 60})
	if n := r.AvailableBytes(); n != 10*72 {
		t.Fatalf("AvailableBytes = %d, want %d", n, 10*72)
	}
}

func TestNextBatch(t *testing.T) {
	p := newProducer(t, 1<<16)
	r := newReader(t, p.Events())
	r.SetDeadline(time.Now().Add(5 * time.Second))
	const size, count, every = 40, 400, 9
	emit(t, p, ringbench.EmitArgs{Count: count, Size: size, DiscardEvery: every})

	want := wantSeqs(0, count, every)
	var got []uint64
	var b ringbuf.Batch
	if b.Next() != nil {
		t.Fatal("the zero Batch is not empty")
	}
	for len(got) < len(want) {
		if err := r.NextBatch(&b); err != nil {
			t.Fatalf("after %d records: %v", len(got), err)
		}
		for rec := b.Next(); rec != nil; rec = b.Next() {
			got = append(got, checkRecord(t, rec, size))
		}
		if err := b.Err(); err != nil {
			t.Fatal(err)
		}
	}
	equalSeqs(t, got, want)
	if n := r.AvailableBytes(); n == 0 {
		t.Fatal("the open batch was handed back before it ended")
	}
	b.Release()
	if n := r.AvailableBytes(); n != 0 {
		t.Fatalf("AvailableBytes = %d after Release", n)
	}

	// Records Next did not return are read again by the next read.
	emit(t, p, ringbench.EmitArgs{Count: 10, Size: 32, FirstSeq: 1000})
	if err := r.NextBatch(&b); err != nil {
		t.Fatal(err)
	}
	for i := range uint64(3) {
		if seq := checkRecord(t, b.Next(), 32); seq != 1000+i {
			t.Fatalf("seq %d, want %d", seq, 1000+i)
		}
	}
	rec, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if seq := checkRecord(t, rec.RawSample, 32); seq != 1003 {
		t.Fatalf("Read after a partly read batch: seq %d, want 1003", seq)
	}
	if b.Next() != nil {
		t.Fatal("a batch ended by Read still returns records")
	}
}

func TestCloseWithOpenBatch(t *testing.T) {
	p := newProducer(t, 1<<16)
	r, err := ringbuf.NewReader(p.Events())
	if err != nil {
		t.Fatal(err)
	}
	emit(t, p, ringbench.EmitArgs{Count: 5, Size: 32})
	var b ringbuf.Batch
	if err := r.NextBatch(&b); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// The ring stays mapped for the open batch.
	for i := range uint64(5) {
		if seq := checkRecord(t, b.Next(), 32); seq != i {
			t.Fatalf("seq %d, want %d", seq, i)
		}
	}
	if err := r.NextBatch(&b); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("NextBatch after Close = %v, want os.ErrClosed", err)
	}
	if b.Next() != nil {
		t.Fatal("a batch returns records after Close")
	}
}

// BenchmarkDrain drains a ring buffer filled by the BPF producer while the
// reader was idle, with this package's readers and cilium/ebpf's, and
// reports the time per record of each and their ratio. b.N is the number
// of records each reader reads.
func BenchmarkDrain(b *testing.B) {
	for _, size := range []uint32{8, 64, 256} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			benchmarkDrain(b, size)
		})
	}
}

func benchmarkDrain(b *testing.B, size uint32) {
	testutil.RequireBPF(b)
	const ring = 1 << 20
	p, err := ringbench.NewProducer(ringbench.Config{RingBytes: ring, SampleSize: size})
	testutil.SkipIfNotSupported(b, "BPF ring buffer maps (5.8) or bpf_loop (5.17)", err)
	defer p.Close()
	if err := p.Attach(); err != nil {
		b.Skipf("needs tracepoint syscalls:sys_enter_getppid: %v", err)
	}
	full := ring/int((8+size+7)&^7) - 1

	var ours, cil time.Duration
	var mallocs uint64
	var sum uint64
	var ms runtime.MemStats
	for done := 0; done < b.N; done += full {
		if err := p.Produce(full); err != nil {
			b.Fatal(err)
		}
		rd := newReader(b, p.Events())
		var batch ringbuf.Batch
		runtime.ReadMemStats(&ms)
		before := ms.Mallocs
		start := time.Now()
		for got := 0; got < full; {
			if err := rd.NextBatch(&batch); err != nil {
				b.Fatal(err)
			}
			for rec := batch.Next(); rec != nil; rec = batch.Next() {
				sum += binary.NativeEndian.Uint64(rec)
				got++
			}
		}
		batch.Release()
		ours += time.Since(start)
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs - before
		rd.Close()

		if err := p.Produce(full); err != nil {
			b.Fatal(err)
		}
		crd, err := ciliumringbuf.NewReader(p.Events())
		if err != nil {
			b.Fatal(err)
		}
		var rec ciliumringbuf.Record
		start = time.Now()
		for range full {
			if err := crd.ReadInto(&rec); err != nil {
				b.Fatal(err)
			}
			sum += binary.NativeEndian.Uint64(rec.RawSample)
		}
		cil += time.Since(start)
		crd.Close()
	}
	rounds := (b.N + full - 1) / full
	records := float64(rounds * full)
	b.ReportMetric(float64(ours.Nanoseconds())/records, "ns/record")
	b.ReportMetric(float64(cil.Nanoseconds())/records, "cilium-ns/record")
	b.ReportMetric(cil.Seconds()/ours.Seconds(), "ours/cilium")
	b.ReportMetric(float64(mallocs)/records, "allocs/record")
	b.ReportMetric(0, "ns/op")
	_ = sum
}
