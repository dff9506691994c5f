package export

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/mlbpf/mlbpf/model"
)

// FuzzDecode exports arbitrary bytes as records of synthetic.Record and
// connRecord in every format: no panic, and every output parses back to
// one row per record. The first byte says how many records the dataset
// claims, so inconsistent datasets are fed too.
func FuzzDecode(f *testing.F) {
	for _, recs := range [][]byte{
		datasetOf(f, 0, syntheticRecords(3)).Data,
		datasetOf(f, 0, connRecords()).Data,
	} {
		f.Add(append([]byte{0}, recs...))
		f.Add(append([]byte{1}, recs...))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 2})

	synth, err := NewSchema(syntheticType)
	if err != nil {
		f.Fatal(err)
	}
	conn, err := NewSchema(connType)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var claim byte
		if len(data) > 0 {
			claim, data = data[0], data[1:]
		}
		for _, s := range []*Schema{synth, conn} {
			n := len(data) / s.RecordSize()
			d := &model.Dataset{
				Type:          model.DatasetStructure,
				State:         model.DatasetExtractedCompletely,
				RecordSize:    s.RecordSize(),
				AllocatedSize: len(data),
				Data:          data[:n*s.RecordSize()],
				PortionSize:   uint32(n),
			}
			if len(data) >= 8 {
				d.PortionOffset = binary.LittleEndian.Uint64(data)
			}
			if claim&1 != 0 {
				d.PortionSize += uint32(claim >> 1) // inconsistent: refused
			}
			for _, f := range formats {
				var buf bytes.Buffer
				w, err := NewSchemaWriter(&buf, f, s)
				if err != nil {
					t.Fatal(err)
				}
				err = w.WriteDataset(d)
				if d.Check() != nil {
					if !errors.Is(err, model.ErrCorruptedDataset) {
						t.Fatalf("%v: inconsistent dataset: %v", f, err)
					}
				} else if err != nil {
					t.Fatalf("%v: %v", f, err)
				}
				if err := w.Close(); err != nil {
					t.Fatalf("%v: closing: %v", f, err)
				}
				rows := int(w.Stats().Rows)
				if got := parsedRows(t, f, buf.Bytes(), len(s.columns)); got != rows {
					t.Fatalf("%v: %d rows parse back, want %d", f, got, rows)
				}
			}
		}
	})
}

// parsedRows parses an export and returns its number of rows, checking
// that each has ncols values.
func parsedRows(t *testing.T, f Format, data []byte, ncols int) int {
	t.Helper()
	switch f {
	case JSONL:
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var row map[string]any
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatalf("line %q: %v", sc.Bytes(), err)
			}
			if len(row) != ncols {
				t.Fatalf("line of %d keys, want %d", len(row), ncols)
			}
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	case CSV:
		r := csv.NewReader(bytes.NewReader(data))
		r.FieldsPerRecord = ncols
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return len(recs) - 1
	default:
		pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		r := parquet.NewReader(pf)
		defer r.Close()
		n := 0
		buf := make([]parquet.Row, 64)
		for {
			k, err := r.ReadRows(buf)
			for _, row := range buf[:k] {
				if len(row) != ncols {
					t.Fatalf("row of %d values, want %d", len(row), ncols)
				}
			}
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if int64(n) != pf.NumRows() {
			t.Fatalf("read %d rows, file says %d", n, pf.NumRows())
		}
		return n
	}
}
