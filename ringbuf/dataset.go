package ringbuf

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// DefaultDatasetBytes is the memory cap of a DatasetBuilder whose
// DatasetConfig leaves MaxBytes at 0.
const DefaultDatasetBytes = 1 << 20

// DatasetConfig describes the records of one model and how much memory a
// DatasetBuilder may hold for them.
type DatasetConfig struct {
	// Kind is the mlbpf_record_hdr kind every record carries
	// (loader.RecordSynthetic, ...). Records of another kind are
	// corrupted.
	Kind uint16
	// RecordSize is the size of every record in bytes, header included,
	// as its mlbpf_record_hdr says and as the ring buffer delivers it.
	// Records of another size are corrupted.
	RecordSize int
	// MaxBytes caps the bytes of records a portion holds (its
	// model.Dataset capacity): records beyond it are dropped and counted,
	// and the portion is only partially extracted. 0 means
	// DefaultDatasetBytes. Rounded down to whole records.
	MaxBytes int
	// FirstOffset is the stream index of the first portion: 0 for a new
	// stream, or where the portions kept from an earlier run ended.
	FirstOffset uint64
}

// DatasetStats are a DatasetBuilder's counters since it was created.
type DatasetStats struct {
	Records   uint64 // records kept in a portion
	Lost      uint64 // records the kernel could not reserve (AddLost)
	Dropped   uint64 // records dropped at the memory cap
	Corrupted uint64 // records that did not decode
	Portions  uint64 // portions taken
}

// DatasetBuilder turns the record stream of a model's ring buffer into
// dataset portions (model.Dataset of type STRUCTURE), in bounded memory.
//
// The portion being built holds at most MaxBytes of records; records past
// it are dropped and counted. Take ends the portion and hands it over; the
// next one starts at the stream index after it (model.Dataset.NextOffset),
// so the stream index counts the records kept. A portion's state, when
// taken:
//   - EXTRACTION_FAILURE after Fail;
//   - CORRUPTED if a record did not decode: of another length, kind or
//     header size than configured. Such records are counted in Corrupted
//     and skipped, not fatal;
//   - EXTRACTED_PARTIALLY if records were lost: by the kernel (AddLost) or
//     dropped at the memory cap, both counted in Lost;
//   - CLEAN if the portion is empty and nothing was missed;
//   - EXTRACTED_COMPLETELY otherwise.
//
// Discard makes a portion OBSOLETE and takes its memory back for a later
// portion, so a steady state of Add, Take and Discard allocates nothing.
// The builder itself holds at most two portions' memory: the one being
// built and one discarded.
//
// A DatasetBuilder is not safe for concurrent use.
type DatasetBuilder struct {
	cfg      DatasetConfig
	capacity int // records per portion

	batch   Batch          // Fill's
	cur     *model.Dataset // CLEAN, being built
	spare   *model.Dataset // OBSOLETE, for the next portion
	next    uint64         // stream index of the next portion
	dropped uint64         // in cur
	failed  bool           // cur

	stats DatasetStats
}

var (
	hdrKindOffset = int(unsafe.Offsetof(loader.RecordHeader{}.Kind))
	hdrSizeOffset = int(unsafe.Offsetof(loader.RecordHeader{}.Size))
)

// NewDatasetBuilder returns a builder of portions of cfg's records.
func NewDatasetBuilder(cfg DatasetConfig) (*DatasetBuilder, error) {
	if cfg.RecordSize < loader.RecordHeaderSize || cfg.RecordSize > math.MaxUint16 {
		return nil, fmt.Errorf("creating dataset builder: record size %d: want %d to %d bytes (a header, then the record's fields): %w",
			cfg.RecordSize, loader.RecordHeaderSize, math.MaxUint16, model.ErrInvalidDataset)
	}
	if cfg.Kind == 0 {
		return nil, fmt.Errorf("creating dataset builder: record kind 0 is MLBPF_REC_UNKNOWN: %w", model.ErrInvalidDataset)
	}
	limit := cfg.MaxBytes
	if limit == 0 {
		limit = DefaultDatasetBytes
	}
	b := &DatasetBuilder{cfg: cfg, capacity: limit / cfg.RecordSize, next: cfg.FirstOffset}
	if b.capacity < 1 {
		return nil, fmt.Errorf("creating dataset builder: memory cap of %d bytes holds no record of %d bytes: %w",
			cfg.MaxBytes, cfg.RecordSize, model.ErrInvalidDataset)
	}
	if err := b.start(); err != nil {
		return nil, fmt.Errorf("creating dataset builder: %w", err)
	}
	return b, nil
}

// start begins the next portion, reusing the spare one's memory if any.
func (b *DatasetBuilder) start() error {
	d := b.spare
	b.spare = nil
	if d == nil {
		d = new(model.Dataset)
		if err := d.Allocate(model.DatasetStructure, b.cfg.RecordSize, b.capacity); err != nil {
			return err
		}
	}
	if err := d.MarkClean(); err != nil {
		return err
	}
	d.PortionOffset = b.next
	b.cur, b.dropped, b.failed = d, 0, false
	return nil
}

// Add appends one record of the stream to the current portion. It never
// fails: a record that does not decode is counted as corrupted, one past
// the memory cap as dropped. Its signature fits Reader.ReadBatch, which it
// copies records out of:
//
//	n, err := rd.ReadBatch(b.Add)
func (b *DatasetBuilder) Add(rec []byte) error {
	d := b.cur
	if !b.decodes(rec) {
		d.Corrupted++
		b.stats.Corrupted++
		return nil
	}
	if d.Full() {
		b.dropped++
		b.stats.Dropped++
		return nil
	}
	if err := d.Append(rec); err != nil {
		// Cannot happen: the size was checked, the portion is CLEAN and
		// not full.
		d.Corrupted++
		b.stats.Corrupted++
		return nil
	}
	b.stats.Records++
	return nil
}

func (b *DatasetBuilder) decodes(rec []byte) bool {
	if len(rec) != b.cfg.RecordSize {
		return false
	}
	return binary.NativeEndian.Uint16(rec[hdrKindOffset:]) == b.cfg.Kind &&
		int(binary.NativeEndian.Uint16(rec[hdrSizeOffset:])) == b.cfg.RecordSize
}

// AddLost counts n records the kernel could not reserve, in the current
// portion: see LostCounter.Delta.
func (b *DatasetBuilder) AddLost(n uint64) {
	b.cur.Lost += n
	b.stats.Lost += n
}

// Fail marks the current portion as failed to extract: reading the ring
// buffer failed while it was being built.
func (b *DatasetBuilder) Fail() { b.failed = true }

// Len is the number of records the current portion holds.
func (b *DatasetBuilder) Len() int { return b.cur.Len() }

// Stats returns the builder's counters.
func (b *DatasetBuilder) Stats() DatasetStats { return b.stats }

// ReadFrom reads one batch of records from rd into the current portion
// and, when lost is not nil, adds the records the kernel lost since the
// last call. It returns the number of records read.
func (b *DatasetBuilder) ReadFrom(rd *Reader, lost *LostCounter) (int, error) {
	n, err := rd.ReadBatch(b.Add)
	if lost != nil {
		d, lerr := lost.Delta()
		if lerr != nil && err == nil {
			err = lerr
		}
		b.AddLost(d)
	}
	return n, err
}

// Fill takes the records available in rd now into the current portion,
// in place from the ring, up to the portion's capacity: the records past
// it stay in the ring for the next portion, none is dropped. With lost
// not nil, it adds the records the kernel lost since the last call (a
// caller filling several portions in a row may pass it to the first
// only: one system call). A read that fails marks the portion failed
// (Fail) and is returned. Fill never waits, and makes no system call
// but lost's.
func (b *DatasetBuilder) Fill(rd *Reader, lost *LostCounter) error {
	d := b.cur
	size := b.cfg.RecordSize
	data := d.Data
	limit := b.capacity * size
	var corrupted uint64
	var err error
	for len(data) < limit {
		var ok bool
		if ok, err = rd.batchNow(&b.batch); !ok || err != nil {
			break
		}
		for len(data) < limit {
			rec := b.batch.Next()
			if rec == nil {
				break
			}
			if !b.decodes(rec) {
				corrupted++
				continue
			}
			data = append(data, rec...)
		}
		if err = b.batch.Err(); err != nil {
			break
		}
	}
	b.batch.Release()
	// What Dataset.Append does record by record: the portion is CLEAN
	// (start), the records are RecordSize bytes and fit its capacity.
	added := len(data)/size - d.Len()
	d.Data, d.PortionSize = data, d.PortionSize+uint32(added)
	d.Corrupted += corrupted
	b.stats.Records += uint64(added)
	b.stats.Corrupted += corrupted
	if lost != nil {
		d, lerr := lost.Delta()
		if err == nil {
			err = lerr
		}
		b.AddLost(d)
	}
	if err != nil {
		b.Fail()
	}
	return err
}

// Take ends the current portion and returns it; the next portion starts
// where it ended. The caller owns the portion until it hands it back with
// Discard.
func (b *DatasetBuilder) Take() (*model.Dataset, error) {
	d := b.cur
	d.Lost += b.dropped
	var err error
	switch {
	case b.failed:
		err = d.Fail()
	case d.Len() == 0 && d.Lost == 0 && d.Corrupted == 0:
		// Nothing to extract: the portion stays CLEAN.
	default:
		err = d.Extracted(d.Lost > 0)
		if err == nil && d.Corrupted > 0 {
			err = d.Corrupt()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("taking dataset portion: %w", err)
	}
	b.next = d.NextOffset()
	b.stats.Portions++
	if err := b.start(); err != nil {
		return nil, fmt.Errorf("starting dataset portion: %w", err)
	}
	return d, nil
}

// Discard marks a portion the learner is done with OBSOLETE and keeps its
// memory for a later portion. Its data stays readable until then.
func (b *DatasetBuilder) Discard(d *model.Dataset) error {
	if d == nil || d == b.cur {
		return fmt.Errorf("discarding dataset portion: %w: not a portion taken from this builder", model.ErrInvalidDataset)
	}
	if d.State != model.DatasetObsolete {
		if err := d.Discard(); err != nil {
			return fmt.Errorf("discarding dataset portion: %w", err)
		}
	}
	if b.spare == nil && d.RecordSize == b.cfg.RecordSize && d.Capacity() == b.capacity {
		b.spare = d
	}
	return nil
}
