package model

import (
	"fmt"
	"iter"
	"slices"
)

// maxDatasetBytes bounds one portion's allocation.
const maxDatasetBytes = 1 << 30

// Dataset is one portion of a model's record stream (the RFC's
// ml_lib_dataset): fixed-size records back to back, with their position in
// the stream. Its state changes only through its methods, following the
// RFC's dataset states:
//
//	UNKNOWN ─Allocate→ ALLOCATED ─MarkClean→ CLEAN ─Extracted→ EXTRACTED_PARTIALLY/COMPLETELY
//	CLEAN, EXTRACTED_PARTIALLY ─Fail→ EXTRACTION_FAILURE
//	EXTRACTED_* ─Corrupt→ CORRUPTED
//	any but UNKNOWN, OBSOLETE ─Discard→ OBSOLETE ─MarkClean→ CLEAN (next portion)
//
// A Dataset is not safe for concurrent use; the Model hands it to one
// consumer at a time.
type Dataset struct {
	Type          DatasetType
	State         DatasetState
	AllocatedSize int    // bytes reserved for Data
	PortionOffset uint64 // index in the model's record stream of this portion's first record
	PortionSize   uint32 // records in this portion
	RecordSize    int
	Data          []byte // PortionSize*RecordSize bytes, fixed-size records back to back
	Lost          uint64 // records the kernel failed to reserve while this portion was collected
	Corrupted     uint64 // records that failed to decode
}

// datasetTransitions lists the legal targets of each dataset state.
var datasetTransitions = map[DatasetState][]DatasetState{
	DatasetStateUnknown:        {DatasetAllocated},
	DatasetAllocated:           {DatasetClean, DatasetObsolete},
	DatasetClean:               {DatasetExtractedPartially, DatasetExtractedCompletely, DatasetExtractionFailure, DatasetObsolete},
	DatasetExtractedPartially:  {DatasetExtractedPartially, DatasetExtractedCompletely, DatasetExtractionFailure, DatasetCorrupted, DatasetObsolete},
	DatasetExtractedCompletely: {DatasetCorrupted, DatasetObsolete},
	DatasetObsolete:            {DatasetAllocated, DatasetClean},
	DatasetExtractionFailure:   {DatasetObsolete},
	DatasetCorrupted:           {DatasetObsolete},
}

// CanTransition reports whether a dataset may go from one state to
// another.
func (s DatasetState) CanTransition(to DatasetState) bool {
	return slices.Contains(datasetTransitions[s], to)
}

func (d *Dataset) to(verb string, target DatasetState) error {
	if !d.State.CanTransition(target) {
		return fmt.Errorf("%s: %w from %v to %v", verb, ErrIllegalTransition, d.State, target)
	}
	d.State = target
	return nil
}

// NewDataset returns a dataset allocated for capacity records of
// recordSize bytes.
func NewDataset(typ DatasetType, recordSize, capacity int) (*Dataset, error) {
	d := new(Dataset)
	if err := d.Allocate(typ, recordSize, capacity); err != nil {
		return nil, err
	}
	return d, nil
}

// Allocate reserves room for capacity records of recordSize bytes: UNKNOWN
// or OBSOLETE → ALLOCATED. The stream position carries over from an
// OBSOLETE portion. The layout must fit the type: EMPTY has no records,
// VALUE records are 1 to 8 bytes, MEMORY_STREAM records are single bytes,
// STRUCTURE records are any positive size.
func (d *Dataset) Allocate(typ DatasetType, recordSize, capacity int) error {
	const verb = "allocating dataset"
	if err := checkLayout(typ, recordSize, capacity); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	next := d.NextOffset()
	if err := d.to(verb, DatasetAllocated); err != nil {
		return err
	}
	d.Type, d.RecordSize = typ, recordSize
	d.AllocatedSize = recordSize * capacity
	if cap(d.Data) < d.AllocatedSize {
		d.Data = make([]byte, 0, d.AllocatedSize)
	}
	d.Data = d.Data[:0]
	d.PortionOffset, d.PortionSize = next, 0
	d.Lost, d.Corrupted = 0, 0
	return nil
}

func checkLayout(typ DatasetType, recordSize, capacity int) error {
	if recordSize < 0 || capacity < 0 {
		return fmt.Errorf("%w: negative record size %d or capacity %d", ErrInvalidDataset, recordSize, capacity)
	}
	switch typ {
	case DatasetEmpty:
		if recordSize != 0 || capacity != 0 {
			return fmt.Errorf("%w: EMPTY dataset with record size %d and capacity %d, want 0 and 0", ErrInvalidDataset, recordSize, capacity)
		}
		return nil
	case DatasetValue:
		if recordSize < 1 || recordSize > 8 {
			return fmt.Errorf("%w: VALUE record size %d, want 1 to 8 bytes", ErrInvalidDataset, recordSize)
		}
	case DatasetStructure:
		if recordSize < 1 {
			return fmt.Errorf("%w: STRUCTURE record size %d, want > 0", ErrInvalidDataset, recordSize)
		}
	case DatasetMemoryStream:
		if recordSize != 1 {
			return fmt.Errorf("%w: MEMORY_STREAM record size %d, want 1", ErrInvalidDataset, recordSize)
		}
	default:
		return fmt.Errorf("%w: type %v", ErrInvalidDataset, typ)
	}
	if capacity < 1 {
		return fmt.Errorf("%w: %v dataset with capacity %d, want > 0", ErrInvalidDataset, typ, capacity)
	}
	if capacity > maxDatasetBytes/recordSize {
		return fmt.Errorf("%w: %d records of %d bytes exceed %d bytes", ErrInvalidDataset, capacity, recordSize, maxDatasetBytes)
	}
	return nil
}

// MarkClean starts the next portion, empty, at NextOffset: ALLOCATED or
// OBSOLETE → CLEAN.
func (d *Dataset) MarkClean() error {
	next := d.NextOffset()
	if err := d.to("marking dataset clean", DatasetClean); err != nil {
		return err
	}
	d.Data = d.Data[:0]
	d.PortionOffset, d.PortionSize = next, 0
	d.Lost, d.Corrupted = 0, 0
	return nil
}

// Extracted ends a round of extraction: CLEAN or EXTRACTED_PARTIALLY →
// EXTRACTED_PARTIALLY when partial (more records may be appended), else
// EXTRACTED_COMPLETELY.
func (d *Dataset) Extracted(partial bool) error {
	if partial {
		return d.to("marking dataset partially extracted", DatasetExtractedPartially)
	}
	return d.to("marking dataset extracted", DatasetExtractedCompletely)
}

// Fail records a failed extraction: CLEAN or EXTRACTED_PARTIALLY →
// EXTRACTION_FAILURE.
func (d *Dataset) Fail() error { return d.to("failing dataset extraction", DatasetExtractionFailure) }

// Corrupt marks extracted data as unusable: EXTRACTED_* → CORRUPTED.
func (d *Dataset) Corrupt() error { return d.to("marking dataset corrupted", DatasetCorrupted) }

// Discard marks the portion as consumed or given up: any allocated state
// but OBSOLETE → OBSOLETE. The data stays readable until MarkClean.
func (d *Dataset) Discard() error { return d.to("discarding dataset", DatasetObsolete) }

// Capacity returns how many records the portion can hold.
func (d *Dataset) Capacity() int {
	if d.RecordSize == 0 {
		return 0
	}
	return d.AllocatedSize / d.RecordSize
}

// Len returns the number of records in the portion.
func (d *Dataset) Len() int { return int(d.PortionSize) }

// Full reports whether the portion holds Capacity records.
func (d *Dataset) Full() bool { return d.Len() >= d.Capacity() }

// NextOffset returns the stream index of the record after this portion.
func (d *Dataset) NextOffset() uint64 { return d.PortionOffset + uint64(d.PortionSize) }

func (d *Dataset) checkAppend(verb string) error {
	if d.State != DatasetClean && d.State != DatasetExtractedPartially {
		return fmt.Errorf("%s: %w: dataset is %v, want CLEAN or EXTRACTED_PARTIALLY", verb, ErrInvalidState, d.State)
	}
	if d.Full() {
		return fmt.Errorf("%s: %w: %d records", verb, ErrDatasetFull, d.Capacity())
	}
	return nil
}

// Append copies one record, which must be RecordSize bytes, into the
// portion. The dataset must be CLEAN or EXTRACTED_PARTIALLY.
func (d *Dataset) Append(record []byte) error {
	const verb = "appending record"
	if len(record) != d.RecordSize {
		return fmt.Errorf("%s: %w: %d bytes, want %d", verb, ErrInvalidDataset, len(record), d.RecordSize)
	}
	if err := d.checkAppend(verb); err != nil {
		return err
	}
	d.Data = append(d.Data, record...)
	d.PortionSize++
	return nil
}

// Reserve appends one zeroed record and returns it to be filled in place,
// saving a copy. The dataset must be CLEAN or EXTRACTED_PARTIALLY.
func (d *Dataset) Reserve() ([]byte, error) {
	if err := d.checkAppend("reserving record"); err != nil {
		return nil, err
	}
	n := len(d.Data)
	d.Data = d.Data[:n+d.RecordSize]
	rec := d.Data[n:]
	clear(rec)
	d.PortionSize++
	return rec, nil
}

// Record returns record i of the portion (0 ≤ i < Len), aliasing Data.
func (d *Dataset) Record(i int) []byte {
	return d.Data[i*d.RecordSize : (i+1)*d.RecordSize : (i+1)*d.RecordSize]
}

// All yields each record with its index in the record stream.
func (d *Dataset) All() iter.Seq2[uint64, []byte] {
	return func(yield func(uint64, []byte) bool) {
		for i := range d.Len() {
			if !yield(d.PortionOffset+uint64(i), d.Record(i)) {
				return
			}
		}
	}
}

// Check verifies that the portion is consistent: its data holds exactly
// PortionSize records, within the allocation.
func (d *Dataset) Check() error {
	switch {
	case d.PortionSize > 0 && d.RecordSize == 0:
		return fmt.Errorf("%w: %d records of size 0", ErrCorruptedDataset, d.PortionSize)
	case len(d.Data) != d.Len()*d.RecordSize:
		return fmt.Errorf("%w: %d bytes of data for %d records of %d bytes", ErrCorruptedDataset, len(d.Data), d.PortionSize, d.RecordSize)
	case len(d.Data) > d.AllocatedSize:
		return fmt.Errorf("%w: %d bytes of data exceed the %d allocated", ErrCorruptedDataset, len(d.Data), d.AllocatedSize)
	}
	return nil
}
