package ringbuf_test

import (
	"encoding/binary"
	"testing"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// FuzzDatasetBuilder feeds a DatasetBuilder arbitrary bytes as records,
// between takes, discards and kernel losses, and checks every portion
// against a model of what it must hold: no input panics it, a record it
// keeps is one of the configured kind and size, the memory cap holds, and
// every record is counted exactly once (kept, dropped at the cap, or
// corrupted).
//
// The input is a program: each byte is an operation, some followed by
// operands:
//
//	0  a well-formed record
//	1  L, then L bytes: those bytes as a record
//	2  take the portion; discard it if the next byte is odd
//	3  N: N records lost by the kernel
func FuzzDatasetBuilder(f *testing.F) {
	good := record(7, kindBench, uint16(testRecordSize))
	f.Add(uint8(3), []byte{0, 0, 2, 1, 0, 2, 0})
	f.Add(uint8(1), []byte{0, 0, 0, 3, 5, 2, 1})
	f.Add(uint8(2), append(append([]byte{1, byte(len(good))}, good...), 2, 0))
	f.Add(uint8(8), append([]byte{1, 20}, good[:20]...))
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, capRecords uint8, prog []byte) {
		capacity := int(capRecords%16) + 1
		b, err := ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
			Kind: kindBench, RecordSize: testRecordSize, MaxBytes: capacity*testRecordSize + int(capRecords)%testRecordSize,
		})
		if err != nil {
			t.Fatal(err)
		}
		var (
			want  ringbuf.DatasetStats
			kept  int    // in the portion being built
			lost  uint64 // by the kernel and past the cap, in it
			bad   uint64 // corrupted, in it
			next  uint64 // stream offset of the next portion
			seq   uint64
			taken []*model.Dataset // not discarded
			saved [][]byte         // their data when taken
		)
		add := func(rec []byte) {
			if err := b.Add(rec); err != nil {
				t.Fatalf("Add: %v", err)
			}
			switch {
			case len(rec) != testRecordSize ||
				binary.NativeEndian.Uint16(rec[8:]) != kindBench ||
				int(binary.NativeEndian.Uint16(rec[10:])) != testRecordSize:
				bad++
				want.Corrupted++
			case kept == capacity:
				lost++
				want.Dropped++
			default:
				kept++
				want.Records++
			}
		}
		for i := 0; i < len(prog); i++ {
			switch prog[i] % 4 {
			case 0:
				add(record(seq, kindBench, uint16(testRecordSize)))
				seq++
			case 1:
				if i+1 >= len(prog) {
					return
				}
				n := int(prog[i+1])
				i += 2
				end := min(i+n, len(prog))
				add(prog[i:end])
				i = end - 1
			case 2:
				ds, err := b.Take()
				if err != nil {
					t.Fatalf("Take: %v", err)
				}
				if err := ds.Check(); err != nil {
					t.Fatalf("portion fails its own check: %v", err)
				}
				var wantState model.DatasetState
				switch {
				case bad > 0:
					wantState = model.DatasetCorrupted
				case kept == 0 && lost == 0:
					wantState = model.DatasetClean
				case lost > 0:
					wantState = model.DatasetExtractedPartially
				default:
					wantState = model.DatasetExtractedCompletely
				}
				if ds.State != wantState || ds.Len() != kept || ds.Lost != lost || ds.Corrupted != bad || ds.PortionOffset != next {
					t.Fatalf("portion %v at %d: %d records, %d lost, %d corrupted; want %v at %d: %d, %d, %d",
						ds.State, ds.PortionOffset, ds.Len(), ds.Lost, ds.Corrupted, wantState, next, kept, lost, bad)
				}
				if len(ds.Data) > capacity*testRecordSize || ds.AllocatedSize > capacity*testRecordSize {
					t.Fatalf("portion holds %d bytes (%d allocated), beyond the cap of %d records", len(ds.Data), ds.AllocatedSize, capacity)
				}
				for _, rec := range ds.All() {
					if binary.NativeEndian.Uint16(rec[8:]) != kindBench || int(binary.NativeEndian.Uint16(rec[10:])) != testRecordSize {
						t.Fatalf("portion holds a record that does not decode: %x", rec)
					}
				}
				want.Portions++
				next += uint64(kept)
				kept, lost, bad = 0, 0, 0
				if i+1 < len(prog) && prog[i+1]%2 == 1 {
					i++
					if err := b.Discard(ds); err != nil {
						t.Fatalf("Discard: %v", err)
					}
					if ds.State != model.DatasetObsolete {
						t.Fatalf("discarded portion is %v", ds.State)
					}
				} else {
					taken = append(taken, ds)
					saved = append(saved, append([]byte(nil), ds.Data...))
				}
			case 3:
				if i+1 >= len(prog) {
					return
				}
				i++
				n := uint64(prog[i])
				b.AddLost(n)
				lost += n
				want.Lost += n
			}
			if b.Len() != kept {
				t.Fatalf("the portion being built holds %d records, want %d", b.Len(), kept)
			}
		}
		if got := b.Stats(); got != want {
			t.Fatalf("stats %+v, want %+v", got, want)
		}
		// Portions handed out and not discarded are the caller's: the
		// builder never wrote into them again.
		for i, ds := range taken {
			if err := ds.Check(); err != nil || string(ds.Data) != string(saved[i]) {
				t.Fatalf("portion %d, taken and not discarded, changed since (check: %v)", i, err)
			}
		}
	})
}
