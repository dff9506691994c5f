package ringbuf_test

import (
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/mlbpf/mlbpf/internal/ringbench"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

const testRecordSize = int(unsafe.Sizeof(ringbench.TestRecord{}))

// record makes a test record as ringbench_emit would.
func record(seq uint64, kind, size uint16) []byte {
	var r ringbench.TestRecord
	r.Hdr.Kind, r.Hdr.Size, r.Seq = kind, size, seq
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r))...)
}

func newBuilder(tb testing.TB, maxBytes int) *ringbuf.DatasetBuilder {
	tb.Helper()
	b, err := ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{Kind: kindBench, RecordSize: testRecordSize, MaxBytes: maxBytes})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func datasetSeqs(tb testing.TB, ds *model.Dataset) []uint64 {
	tb.Helper()
	if ds.RecordSize != testRecordSize || len(ds.Data)%testRecordSize != 0 {
		tb.Fatalf("dataset of %d bytes, record size %d", len(ds.Data), ds.RecordSize)
	}
	var out []uint64
	for _, rec := range ds.All() {
		out = append(out, checkRecord(tb, rec, testRecordSize))
	}
	return out
}

func take(tb testing.TB, b *ringbuf.DatasetBuilder) *model.Dataset {
	tb.Helper()
	ds, err := b.Take()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ds.Check(); err != nil {
		tb.Fatal(err)
	}
	return ds
}

func TestDatasetPortions(t *testing.T) {
	b := newBuilder(t, 0)
	good := uint16(testRecordSize)

	ds := take(t, b)
	if ds.Type != model.DatasetStructure || ds.State != model.DatasetClean || ds.PortionOffset != 0 || ds.PortionSize != 0 {
		t.Fatalf("empty portion: %+v", ds)
	}

	for i := range uint64(10) {
		b.Add(record(i, kindBench, good))
	}
	ds = take(t, b)
	if ds.State != model.DatasetExtractedCompletely || ds.PortionOffset != 0 || ds.PortionSize != 10 {
		t.Fatalf("portion %v at %d of %d records, want EXTRACTED_COMPLETELY at 0 of 10", ds.State, ds.PortionOffset, ds.PortionSize)
	}
	equalSeqs(t, datasetSeqs(t, ds), wantSeqs(0, 10, 0))

	for i := range uint64(5) {
		b.Add(record(10+i, kindBench, good))
	}
	ds2 := take(t, b)
	if ds2.PortionOffset != 10 || ds2.PortionSize != 5 {
		t.Fatalf("second portion at %d of %d records; want 10, 5", ds2.PortionOffset, ds2.PortionSize)
	}
	equalSeqs(t, datasetSeqs(t, ds2), wantSeqs(10, 5, 0))
	if st := b.Stats(); st.Records != 15 || st.Portions != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDatasetCorruptedRecordsCounted(t *testing.T) {
	b := newBuilder(t, 0)
	good := uint16(testRecordSize)
	b.Add(record(0, kindBench, good))
	b.Add(record(1, 999, good))            // unknown kind
	b.Add(record(2, kindBench, good+8))    // header size differs from the length
	b.Add(record(3, kindBench, good)[:20]) // shorter than a header
	b.Add(append(record(4, kindBench, good+8), make([]byte, 8)...))
	b.Add(record(5, kindBench, good))

	ds := take(t, b)
	if ds.State != model.DatasetCorrupted || ds.Corrupted != 4 {
		t.Fatalf("portion %v with %d corrupted records, want CORRUPTED with 4", ds.State, ds.Corrupted)
	}
	equalSeqs(t, datasetSeqs(t, ds), []uint64{0, 5})

	// The next portion starts clean.
	b.Add(record(6, kindBench, good))
	ds = take(t, b)
	if ds.State != model.DatasetExtractedCompletely || ds.Corrupted != 0 || ds.PortionOffset != 2 {
		t.Fatalf("portion after a corrupted one is %v at %d, %d corrupted", ds.State, ds.PortionOffset, ds.Corrupted)
	}
}

func TestDatasetMemoryCap(t *testing.T) {
	const keep = 50
	b := newBuilder(t, keep*testRecordSize+testRecordSize/2)
	for round := range 20 {
		for i := range 10_000 {
			b.Add(record(uint64(i), kindBench, uint16(testRecordSize)))
		}
		ds := take(t, b)
		if len(ds.Data) != keep*testRecordSize || ds.AllocatedSize > keep*testRecordSize || cap(ds.Data) > keep*testRecordSize {
			t.Fatalf("round %d: portion holds %d bytes, %d allocated, beyond the cap of %d", round, len(ds.Data), ds.AllocatedSize, keep*testRecordSize)
		}
		if ds.State != model.DatasetExtractedPartially || ds.Lost != 10_000-keep {
			t.Fatalf("round %d: portion %v, %d lost; want EXTRACTED_PARTIALLY, %d", round, ds.State, ds.Lost, 10_000-keep)
		}
		if err := b.Discard(ds); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.Stats(); st.Dropped != 20*(10_000-keep) || st.Lost != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDatasetLostAndFailed(t *testing.T) {
	b := newBuilder(t, 0)
	b.Add(record(0, kindBench, uint16(testRecordSize)))
	b.AddLost(3)
	ds := take(t, b)
	if ds.State != model.DatasetExtractedPartially || ds.Lost != 3 {
		t.Fatalf("portion %v, %d lost; want EXTRACTED_PARTIALLY, 3", ds.State, ds.Lost)
	}
	b.Fail()
	ds = take(t, b)
	if ds.State != model.DatasetExtractionFailure {
		t.Fatalf("portion %v, want EXTRACTION_FAILURE", ds.State)
	}
}

func TestDatasetDiscard(t *testing.T) {
	b := newBuilder(t, 0)
	b.Add(record(0, kindBench, uint16(testRecordSize)))
	ds := take(t, b)
	if err := b.Discard(ds); err != nil {
		t.Fatal(err)
	}
	if ds.State != model.DatasetObsolete {
		t.Fatalf("discarded portion is %v, want OBSOLETE", ds.State)
	}
	// Its memory comes back, for the portion after the one being built.
	b.Add(record(1, kindBench, uint16(testRecordSize)))
	ds1 := take(t, b)
	b.Add(record(2, kindBench, uint16(testRecordSize)))
	ds2 := take(t, b)
	if ds2 != ds || ds2.State != model.DatasetExtractedCompletely || ds2.PortionOffset != 2 {
		t.Fatalf("recycled portion: same %v, %v at %d", ds2 == ds, ds2.State, ds2.PortionOffset)
	}
	equalSeqs(t, datasetSeqs(t, ds1), []uint64{1})
	equalSeqs(t, datasetSeqs(t, ds2), []uint64{2})
	if err := b.Discard(nil); !errors.Is(err, model.ErrInvalidDataset) {
		t.Fatalf("Discard(nil) = %v", err)
	}
}

func TestDatasetConfigRefused(t *testing.T) {
	for _, cfg := range []ringbuf.DatasetConfig{
		{Kind: kindBench, RecordSize: 8},
		{Kind: 0, RecordSize: 32},
		{Kind: kindBench, RecordSize: 32, MaxBytes: 16},
	} {
		if _, err := ringbuf.NewDatasetBuilder(cfg); !errors.Is(err, model.ErrInvalidDataset) {
			t.Errorf("%+v: %v, want ErrInvalidDataset", cfg, err)
		}
	}
}

// TestDatasetFromRing builds portions from a ring the kernel filled past
// its size: the records that fit, in order, and the others counted lost.
func TestDatasetFromRing(t *testing.T) {
	page := os.Getpagesize()
	p := newProducer(t, uint32(page))
	r := newReader(t, p.Events())
	lost, err := ringbuf.NewLostCounter(p.Lost())
	if err != nil {
		t.Fatal(err)
	}
	b := newBuilder(t, 0)
	const count = 300
	emit(t, p, ringbench.EmitArgs{Count: count, Size: uint64(testRecordSize)})
	emit(t, p, ringbench.EmitArgs{Count: 1, Size: uint64(testRecordSize) + 8, FirstSeq: count}) // lost as well

	r.SetDeadline(time.Now().Add(-time.Second))
	for {
		if _, err := b.ReadFrom(r, lost); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	ds := take(t, b)
	fits := (page - 8) / (testRecordSize + 8)
	if ds.State != model.DatasetExtractedPartially || ds.Lost != uint64(count+1-fits) {
		t.Fatalf("portion %v, %d lost; want EXTRACTED_PARTIALLY, %d", ds.State, ds.Lost, count+1-fits)
	}
	equalSeqs(t, datasetSeqs(t, ds), wantSeqs(0, uint64(fits), 0))
	if err := b.Discard(ds); err != nil {
		t.Fatal(err)
	}

	// Steady state: reading, taking and discarding portions allocates
	// nothing per record (prog.Run allocates once per run).
	r.SetDeadline(time.Time{})
	fn := func() {
		emit(t, p, ringbench.EmitArgs{Count: 50, Size: uint64(testRecordSize)})
		for b.Len() < 50 {
			if _, err := b.ReadFrom(r, nil); err != nil {
				t.Fatal(err)
			}
		}
		ds, err := b.Take()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Discard(ds); err != nil {
			t.Fatal(err)
		}
	}
	fn()
	fn()
	allocs := testing.AllocsPerRun(50, fn)
	emitOnly := testing.AllocsPerRun(50, func() {
		emit(t, p, ringbench.EmitArgs{Count: 50, Size: uint64(testRecordSize)})
		for got := 0; got < 50; {
			n, _ := r.ReadBatch(func([]byte) error { return nil })
			got += n
		}
	})
	if allocs > emitOnly {
		t.Fatalf("%.0f allocations per portion of 50 records, the producer alone %.0f", allocs, emitOnly)
	}
}

// TestDatasetFill fills portions in place from the ring: up to the
// portion's capacity, the rest left in the ring for the next portion,
// nothing dropped, the kernel's losses counted once.
func TestDatasetFill(t *testing.T) {
	p := newProducer(t, uint32(os.Getpagesize()))
	r := newReader(t, p.Events())
	lost, err := ringbuf.NewLostCounter(p.Lost())
	if err != nil {
		t.Fatal(err)
	}
	const capacity = 7
	b := newBuilder(t, capacity*testRecordSize)
	fits := (os.Getpagesize() - 8) / (testRecordSize + 8)
	const count = 300
	emit(t, p, ringbench.EmitArgs{Count: count, Size: uint64(testRecordSize)})
	var seqs []uint64
	for i := 0; ; i++ {
		if err := b.Fill(r, lost); err != nil {
			t.Fatal(err)
		}
		ds := take(t, b)
		if ds.State == model.DatasetClean {
			break
		}
		wantLost := uint64(0)
		if i == 0 {
			wantLost = count - uint64(fits)
		}
		if ds.Lost != wantLost || ds.Len() > capacity || (ds.Len() < capacity && len(seqs)+ds.Len() != fits) {
			t.Fatalf("portion %d: %v, %d records, %d lost; want at most %d records, %d lost", i, ds.State, ds.Len(), ds.Lost, capacity, wantLost)
		}
		seqs = append(seqs, datasetSeqs(t, ds)...)
		if err := b.Discard(ds); err != nil {
			t.Fatal(err)
		}
	}
	equalSeqs(t, seqs, wantSeqs(0, uint64(fits), 0))
	if st := b.Stats(); st.Dropped != 0 || st.Lost != count-uint64(fits) {
		t.Fatalf("stats %+v: want nothing dropped, %d lost", st, count-fits)
	}
}
