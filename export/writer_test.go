package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

// syntheticExport returns two synthetic datasets, at stream offsets 0 and
// 1000, and the rows they export to.
func syntheticExport(t testing.TB) ([]*model.Dataset, [][]string) {
	recs := syntheticRecords(20)
	ds := []*model.Dataset{datasetOf(t, 0, recs[:12]), datasetOf(t, 1000, recs[12:])}
	var rows [][]string
	for _, d := range ds {
		for i := range d.Len() {
			off := d.PortionOffset + uint64(i)
			rows = append(rows, syntheticRow(off, recs[len(rows)]))
		}
	}
	return ds, rows
}

func connExport(t testing.TB) (*model.Dataset, [][]string) {
	recs := connRecords()
	d := datasetOf(t, 1<<40, recs)
	var rows [][]string
	for i, r := range recs {
		rows = append(rows, connRow(d.PortionOffset+uint64(i), r))
	}
	return d, rows
}

func TestSyntheticRecordsEncode(t *testing.T) {
	// The test records are encoded as the kernel lays them out, so that
	// synthetic.DecodeRecord reads them back.
	recs := syntheticRecords(3)
	d := datasetOf(t, 0, recs)
	for i, want := range recs {
		var got synthetic.Record
		if err := synthetic.DecodeRecord(d.Record(i), &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("record %d decodes to %+v, want %+v", i, got, want)
		}
	}
}

// readJSONL parses JSON lines, checking that each object has the columns
// as keys in order, and returns their values as text: numbers exactly as
// written (json.Number), strings unquoted.
func readJSONL(t *testing.T, data []byte, names []string) [][]string {
	t.Helper()
	var rows [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("line %d: %q: want an object (%v)", len(rows)+1, sc.Text(), err)
		}
		var keys, row []string
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, key.(string))
			val, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			switch v := val.(type) {
			case json.Number:
				row = append(row, v.String())
			case string:
				row = append(row, v)
			case bool:
				row = append(row, strconv.FormatBool(v))
			default:
				t.Fatalf("line %d: key %q: value %v of type %T", len(rows)+1, key, val, val)
			}
		}
		if !slices.Equal(keys, names) {
			t.Fatalf("line %d: keys %q, want %q", len(rows)+1, keys, names)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

func readCSV(t *testing.T, data []byte, names []string) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || !slices.Equal(recs[0], names) {
		t.Fatalf("header %q, want %q", recs[:min(len(recs), 1)], names)
	}
	return recs[1:]
}

// parquetFile opens a Parquet file from memory, checking its columns
// against the schema: names in order, physical and logical types.
func parquetFile(t *testing.T, data []byte, s *Schema) *parquet.File {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[ColumnType][2]string{
		TypeUint8: {"INT32", "INT(8,false)"}, TypeUint16: {"INT32", "INT(16,false)"},
		TypeUint32: {"INT32", "INT(32,false)"}, TypeUint64: {"INT64", "INT(64,false)"},
		TypeInt8: {"INT32", "INT(8,true)"}, TypeInt16: {"INT32", "INT(16,true)"},
		TypeInt32: {"INT32", "INT(32,true)"}, TypeInt64: {"INT64", "INT(64,true)"},
		TypeBool: {"BOOLEAN", ""}, TypeString: {"BYTE_ARRAY", "STRING"},
	}
	// The schema as written in the file's footer, the root first.
	elems := f.Metadata().Schema
	cols := s.Columns()
	if len(elems) != len(cols)+1 {
		t.Fatalf("%d schema elements, want %d columns and the root", len(elems), len(cols))
	}
	for i, c := range cols {
		e := elems[i+1]
		got := [2]string{e.Type.V.String(), e.LogicalType.String()}
		if e.Name != c.Name || got != want[c.Type] {
			t.Errorf("column %d: %s %v, want %s %v", i, e.Name, got, c.Name, want[c.Type])
		}
		if rep := e.RepetitionType.V.String(); rep != "REQUIRED" {
			t.Errorf("column %s: %s, want REQUIRED", e.Name, rep)
		}
	}
	if v, _ := f.Lookup("mlbpf.record_type"); v != s.RecordType().String() {
		t.Errorf("mlbpf.record_type %q, want %q", v, s.RecordType())
	}
	return f
}

// readParquet returns the rows of a Parquet file as text.
func readParquet(t *testing.T, data []byte, s *Schema) [][]string {
	t.Helper()
	f := parquetFile(t, data, s)
	cols := s.Columns()
	r := parquet.NewReader(f)
	defer r.Close()
	var rows [][]string
	buf := make([]parquet.Row, 100)
	for {
		n, err := r.ReadRows(buf)
		for _, pr := range buf[:n] {
			if len(pr) != len(cols) {
				t.Fatalf("row of %d values, want %d", len(pr), len(cols))
			}
			row := make([]string, len(pr))
			for j, v := range pr {
				row[j] = parquetText(cols[j].Type, v)
			}
			rows = append(rows, row)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if int64(len(rows)) != f.NumRows() {
		t.Fatalf("read %d rows, file says %d", len(rows), f.NumRows())
	}
	return rows
}

func parquetText(t ColumnType, v parquet.Value) string {
	switch t {
	case TypeUint8, TypeUint16, TypeUint32:
		return strconv.FormatUint(uint64(v.Uint32()), 10)
	case TypeUint64:
		return strconv.FormatUint(v.Uint64(), 10)
	case TypeInt8, TypeInt16, TypeInt32:
		return strconv.FormatInt(int64(v.Int32()), 10)
	case TypeInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case TypeBool:
		return strconv.FormatBool(v.Boolean())
	default:
		return string(v.ByteArray())
	}
}

func readRows(t *testing.T, f Format, data []byte, s *Schema) [][]string {
	t.Helper()
	switch f {
	case JSONL:
		return readJSONL(t, data, s.Names())
	case CSV:
		return readCSV(t, data, s.Names())
	default:
		return readParquet(t, data, s)
	}
}

var formats = []Format{JSONL, CSV, Parquet}

func checkRows(t *testing.T, got, want [][]string, names []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("row %d: %d values, want %d", i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Errorf("row %d, %s: %q, want %q", i, names[j], got[i][j], want[i][j])
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			t.Run("synthetic", func(t *testing.T) {
				s, err := NewSchema(syntheticType)
				if err != nil {
					t.Fatal(err)
				}
				ds, want := syntheticExport(t)
				got := readRows(t, f, exportBytes(t, f, syntheticType, ds...), s)
				checkRows(t, got, want, s.Names())
			})
			t.Run("conn", func(t *testing.T) {
				s, err := NewSchema(connType)
				if err != nil {
					t.Fatal(err)
				}
				d, want := connExport(t)
				got := readRows(t, f, exportBytes(t, f, connType, d), s)
				checkRows(t, got, want, s.Names())
			})
			t.Run("empty", func(t *testing.T) {
				s, err := NewSchema(syntheticType)
				if err != nil {
					t.Fatal(err)
				}
				data := exportBytes(t, f, syntheticType, datasetOf[synthetic.Record](t, 5, nil))
				if got := readRows(t, f, data, s); len(got) != 0 {
					t.Fatalf("%d rows, want none", len(got))
				}
			})
		})
	}
}

func TestJSONLExactUint64(t *testing.T) {
	// ts_ns above 2^53 must come back exactly, not through a float64.
	recs := syntheticRecords(2)
	for _, r := range recs {
		if uint64(float64(r.Hdr.TsNs)) == r.Hdr.TsNs {
			t.Fatalf("ts_ns %d is exact as a float64: the test needs one that is not", r.Hdr.TsNs)
		}
	}
	data := exportBytes(t, JSONL, syntheticType, datasetOf(t, 0, recs))
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for i, r := range recs {
		var row map[string]any
		if err := dec.Decode(&row); err != nil {
			t.Fatal(err)
		}
		n, ok := row["ts_ns"].(json.Number)
		if !ok {
			t.Fatalf("ts_ns is %T, want a JSON number", row["ts_ns"])
		}
		got, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil || got != r.Hdr.TsNs {
			t.Fatalf("record %d: ts_ns %s, want %d (%v)", i, n, r.Hdr.TsNs, err)
		}
	}
}

func TestParquetRowGroups(t *testing.T) {
	// Rows beyond RowGroupRows start a new row group: the writer holds at
	// most one row group in memory.
	s, err := NewSchema(syntheticType)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2*RowGroupRows + 5
	recs := syntheticRecords(n)
	data := exportBytes(t, Parquet, syntheticType, datasetOf(t, 7, recs[:n/2]), datasetOf(t, 7+n/2, recs[n/2:]))
	f := parquetFile(t, data, s)
	if f.NumRows() != n {
		t.Fatalf("%d rows, want %d", f.NumRows(), n)
	}
	groups := f.RowGroups()
	if len(groups) != 3 {
		t.Fatalf("%d row groups, want 3", len(groups))
	}
	for i, g := range groups[:2] {
		if g.NumRows() != RowGroupRows {
			t.Errorf("row group %d: %d rows, want %d", i, g.NumRows(), RowGroupRows)
		}
	}
	rows := readParquet(t, data, s)
	for _, i := range []int{0, RowGroupRows - 1, RowGroupRows, n - 1} {
		checkRows(t, rows[i:i+1], [][]string{syntheticRow(7+uint64(i), recs[i])}, s.Names())
	}
}

func TestWriteDatasetStates(t *testing.T) {
	recs := syntheticRecords(4)

	corrupted := datasetOf(t, 0, recs[:2])
	corrupted.Corrupted = 3
	if err := corrupted.Corrupt(); err != nil {
		t.Fatal(err)
	}
	failed := datasetOf[synthetic.Record](t, 2, nil)
	if err := failed.Append(binaryRecord(t, recs[2])); err != nil {
		t.Fatal(err)
	}
	if err := failed.Fail(); err != nil {
		t.Fatal(err)
	}
	partial := datasetOf[synthetic.Record](t, 3, nil)
	if err := partial.Append(binaryRecord(t, recs[3])); err != nil {
		t.Fatal(err)
	}
	partial.Lost = 10
	if err := partial.Extracted(true); err != nil {
		t.Fatal(err)
	}
	if err := partial.Discard(); err != nil { // OBSOLETE, still readable
		t.Fatal(err)
	}
	empty := datasetOf[synthetic.Record](t, 4, nil)

	var buf bytes.Buffer
	w, err := NewWriter(&buf, CSV, syntheticType)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*model.Dataset{corrupted, failed, partial, empty} {
		if err := w.WriteDataset(d); err != nil {
			t.Fatalf("%v dataset: %v", d.State, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := Stats{Datasets: 4, Rows: 4, Lost: 10, Corrupted: 3, CorruptedDatasets: 1, FailedDatasets: 1}
	if got := w.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	if want.Complete() {
		t.Fatal("stats with losses are complete")
	}
	if got, wantS := want.String(), "4 rows from 4 datasets; missing: 10 lost, 3 corrupted; 1 datasets failed extraction"; got != wantS {
		t.Fatalf("String() = %q, want %q", got, wantS)
	}
	var wantRows [][]string
	for i, r := range recs {
		wantRows = append(wantRows, syntheticRow(uint64(i), r))
	}
	checkRows(t, readCSV(t, buf.Bytes(), syntheticNames()), wantRows, syntheticNames())
}

func syntheticNames() []string {
	var names []string
	for _, c := range syntheticColumns {
		names = append(names, c.Name)
	}
	return names
}

func binaryRecord(t *testing.T, r synthetic.Record) []byte {
	t.Helper()
	return datasetOf(t, 0, []synthetic.Record{r}).Record(0)
}

func TestWriteDatasetRefuses(t *testing.T) {
	recs := syntheticRecords(2)
	inconsistent := datasetOf(t, 0, recs)
	inconsistent.PortionSize = 3
	value, err := model.NewDataset(model.DatasetValue, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := value.MarkClean(); err != nil {
		t.Fatal(err)
	}
	if err := value.Append(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    *model.Dataset
		want error
	}{
		{"nil", nil, model.ErrInvalidDataset},
		{"inconsistent", inconsistent, model.ErrCorruptedDataset},
		{"other record size", datasetOf(t, 0, connRecords()), model.ErrInvalidDataset},
		{"VALUE", value, model.ErrInvalidDataset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range formats {
				var buf bytes.Buffer
				w, err := NewWriter(&buf, f, syntheticType)
				if err != nil {
					t.Fatal(err)
				}
				if err := w.WriteDataset(tc.d); !errors.Is(err, tc.want) {
					t.Fatalf("%v: WriteDataset: %v, want %v", f, err, tc.want)
				}
				// Nothing of it was written, and the writer goes on.
				if err := w.WriteDataset(datasetOf(t, 0, recs)); err != nil {
					t.Fatalf("%v: next WriteDataset: %v", f, err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if got := w.Stats(); got.Datasets != 1 || got.Rows != 2 {
					t.Fatalf("%v: stats %+v, want 1 dataset of 2 rows", f, got)
				}
			}
		})
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, errDiskFull
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	ds, _ := syntheticExport(t)
	big := datasetOf(t, 0, syntheticRecords(20000)) // more than the buffers
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			w, err := NewWriter(&failWriter{n: 100}, f, syntheticType)
			if err != nil {
				t.Fatal(err)
			}
			err = w.WriteDataset(big)
			if err == nil {
				err = w.Close()
			}
			if !errors.Is(err, errDiskFull) {
				t.Fatalf("write to a full disk: %v, want %v", err, errDiskFull)
			}
			// Sticky.
			if err := w.WriteDataset(ds[0]); !errors.Is(err, errDiskFull) {
				t.Fatalf("WriteDataset after an error: %v", err)
			}
			if err := w.Close(); !errors.Is(err, errDiskFull) {
				t.Fatalf("Close after an error: %v", err)
			}
		})
	}
	t.Run("closed", func(t *testing.T) {
		w, err := NewWriter(io.Discard, JSONL, syntheticType)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteDataset(ds[0]); !errors.Is(err, ErrWriterClosed) {
			t.Fatalf("WriteDataset after Close: %v, want %v", err, ErrWriterClosed)
		}
		if err := w.Close(); !errors.Is(err, ErrWriterClosed) {
			t.Fatalf("second Close: %v, want %v", err, ErrWriterClosed)
		}
	})
	t.Run("format", func(t *testing.T) {
		if _, err := NewWriter(io.Discard, Format(9), syntheticType); !errors.Is(err, ErrUnknownFormat) {
			t.Fatalf("NewWriter(Format(9)): %v, want %v", err, ErrUnknownFormat)
		}
		if _, err := NewWriter(io.Discard, CSV, reflect.TypeFor[float64]()); !errors.Is(err, ErrUnsupportedType) {
			t.Fatalf("NewWriter(float64): %v, want %v", err, ErrUnsupportedType)
		}
	})
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
	}{
		{"jsonl", JSONL}, {"NDJSON", JSONL}, {" csv ", CSV}, {"Parquet", Parquet},
	} {
		got, err := ParseFormat(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "json", "xlsx"} {
		if _, err := ParseFormat(in); !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("ParseFormat(%q): %v, want %v", in, err, ErrUnknownFormat)
		}
	}
	for _, f := range formats {
		var back Format
		text, err := f.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if err := back.UnmarshalText(text); err != nil || back != f {
			t.Errorf("%v: text round trip gives %v, %v", f, back, err)
		}
		if got := FormatOf("dir.x/out" + strings.ToUpper(f.Extension())); got != f {
			t.Errorf("FormatOf(%s) = %v, want %v", f.Extension(), got, f)
		}
	}
	if _, err := FormatUnknown.MarshalText(); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("FormatUnknown.MarshalText: %v", err)
	}
	if got := FormatOf("out.txt"); got != FormatUnknown {
		t.Errorf("FormatOf(out.txt) = %v", got)
	}
	if got := Format(9).String(); got != "Format(9)" {
		t.Errorf("Format(9).String() = %q", got)
	}
}
