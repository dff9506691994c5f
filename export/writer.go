package export

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"

	"github.com/mlbpf/mlbpf/model"
)

// ErrWriterClosed is returned by a Writer's methods after Close.
var ErrWriterClosed = errors.New("export writer closed")

// Stats counts what a Writer wrote and what the datasets it wrote had
// missed.
type Stats struct {
	Datasets uint64 // datasets written, empty ones included
	Rows     uint64 // records written, one row each
	// Lost sums the datasets' Lost: records the kernel could not reserve
	// or the builder dropped at its memory cap, never in any dataset.
	Lost uint64
	// Corrupted sums the datasets' Corrupted: records that did not decode
	// when the dataset was built, skipped then, so not exported.
	Corrupted uint64
	// CorruptedDatasets and FailedDatasets count the datasets written in
	// state CORRUPTED and EXTRACTION_FAILURE: their valid records were
	// exported.
	CorruptedDatasets uint64
	FailedDatasets    uint64
}

// Complete reports whether the export misses nothing: no record was
// lost or corrupted and no extraction failed.
func (s Stats) Complete() bool {
	return s.Lost == 0 && s.Corrupted == 0 && s.FailedDatasets == 0
}

// String summarizes the stats for a person, "1200 rows from 3 datasets;
// missing: 5 lost, 2 corrupted" for example.
func (s Stats) String() string {
	out := strconv.FormatUint(s.Rows, 10) + " rows from " + strconv.FormatUint(s.Datasets, 10) + " datasets"
	if s.Complete() && s.CorruptedDatasets == 0 {
		return out
	}
	out += "; missing: " + strconv.FormatUint(s.Lost, 10) + " lost, " + strconv.FormatUint(s.Corrupted, 10) + " corrupted"
	if s.FailedDatasets > 0 {
		out += "; " + strconv.FormatUint(s.FailedDatasets, 10) + " datasets failed extraction"
	}
	return out
}

// encoder writes the rows of one format.
type encoder interface {
	// writeRecords writes one row per record of d, checked to be of the
	// schema's record size.
	writeRecords(d *model.Dataset) error
	// close flushes what is buffered and ends the output (Parquet's
	// footer).
	close() error
}

// Writer writes the records of datasets as rows of one format, in bounded
// memory: it buffers at most a row group (Parquet) or 64 KiB (JSONL, CSV)
// before writing to its io.Writer.
//
// A Writer is not safe for concurrent use. After a write error, every
// call returns that error: the output is incomplete and should be thrown
// away (WriteFile does).
type Writer struct {
	schema *Schema
	format Format
	enc    encoder
	stats  Stats
	err    error // sticky
}

// NewWriter returns a writer of records of type recordType (see
// NewSchema) to w in format f. Close must be called to complete the
// output (CSV's header line goes out with the first rows or on Close); it
// does not close w.
func NewWriter(w io.Writer, f Format, recordType reflect.Type) (*Writer, error) {
	s, err := NewSchema(recordType)
	if err != nil {
		return nil, fmt.Errorf("creating %v export writer: %w", f, err)
	}
	return NewSchemaWriter(w, f, s)
}

// NewSchemaWriter is NewWriter for a schema derived already.
func NewSchemaWriter(w io.Writer, f Format, s *Schema) (*Writer, error) {
	if s == nil {
		return nil, fmt.Errorf("creating %v export writer: %w: no schema", f, ErrUnsupportedType)
	}
	var enc encoder
	switch f {
	case JSONL:
		enc = newJSONLEncoder(w, s)
	case CSV:
		enc = newCSVEncoder(w, s)
	case Parquet:
		enc = newParquetEncoder(w, s)
	default:
		return nil, fmt.Errorf("creating export writer: %w: %v", ErrUnknownFormat, f)
	}
	return &Writer{schema: s, format: f, enc: enc}, nil
}

// Schema returns the columns the writer writes.
func (w *Writer) Schema() *Schema { return w.schema }

// Format returns the format the writer writes.
func (w *Writer) Format() Format { return w.format }

// Stats returns what the writer has written so far.
func (w *Writer) Stats() Stats { return w.stats }

// WriteDataset writes one row per record of d, in stream order, with
// stream_offset = d.PortionOffset + the record's index.
//
// Every dataset whose data is consistent (model.Dataset.Check) is
// written, whatever its state: the records a dataset holds are the ones
// that decoded when it was built, so a CORRUPTED dataset's (whose bad
// records were skipped) and an EXTRACTION_FAILURE one's (cut short) are
// exported and counted in Stats, as are the records they missed. An
// OBSOLETE dataset still holds its records (until it is marked clean for
// the next portion) and is exported like any other. A dataset with
// records must be of type STRUCTURE with the schema's record size; one
// that is not, or whose data is inconsistent, is refused with an error
// wrapping model.ErrInvalidDataset or model.ErrCorruptedDataset and
// nothing of it is written.
func (w *Writer) WriteDataset(d *model.Dataset) error {
	if w.err != nil {
		return w.err
	}
	if d == nil {
		return fmt.Errorf("writing dataset: %w: nil", model.ErrInvalidDataset)
	}
	if err := d.Check(); err != nil {
		return fmt.Errorf("writing dataset at stream offset %d: %w", d.PortionOffset, err)
	}
	if d.Len() > 0 {
		if d.Type != model.DatasetStructure {
			return fmt.Errorf("writing dataset at stream offset %d: %w: type %v, want STRUCTURE", d.PortionOffset, model.ErrInvalidDataset, d.Type)
		}
		if d.RecordSize != w.schema.size {
			return fmt.Errorf("writing dataset at stream offset %d: %w: records of %d bytes, want %d (%v)",
				d.PortionOffset, model.ErrInvalidDataset, d.RecordSize, w.schema.size, w.schema.typ)
		}
		if err := w.enc.writeRecords(d); err != nil {
			w.err = fmt.Errorf("writing %v dataset at stream offset %d: %w", w.format, d.PortionOffset, err)
			return w.err
		}
	}
	w.stats.Datasets++
	w.stats.Rows += uint64(d.Len())
	w.stats.Lost += d.Lost
	w.stats.Corrupted += d.Corrupted
	switch d.State {
	case model.DatasetCorrupted:
		w.stats.CorruptedDatasets++
	case model.DatasetExtractionFailure:
		w.stats.FailedDatasets++
	}
	return nil
}

// Close writes what is buffered and ends the output: Parquet's footer,
// without which the file is unreadable. It does not close the io.Writer.
// Calling Close again returns ErrWriterClosed.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.err = ErrWriterClosed
	if err := w.enc.close(); err != nil {
		w.err = fmt.Errorf("closing %v export writer: %w", w.format, err)
		return w.err
	}
	return nil
}
