package export

import (
	"io"

	"github.com/parquet-go/parquet-go"

	"github.com/mlbpf/mlbpf/model"
)

// Parquet layout.
const (
	// RowGroupRows is the most rows a Parquet row group holds, fewer for
	// records of many columns: the writer holds one row group in memory,
	// about rowGroupBytes of values.
	RowGroupRows = 64 << 10
	// rowGroupBytes bounds the values of a row group, 8 bytes a value.
	rowGroupBytes = 32 << 20
	// batchValues bounds the values handed to parquet-go at a time.
	batchValues = 16 << 10
)

// rowGroupRows returns the rows of a row group of ncols columns.
func rowGroupRows(ncols int) int {
	return min(max(rowGroupBytes/(8*ncols), 1024), RowGroupRows)
}

// parquetEncoder writes a Parquet file: one required column per schema
// column, Snappy-compressed, strings dictionary-encoded.
type parquetEncoder struct {
	s    *Schema
	pw   *parquet.Writer
	rows []parquet.Row
	vals []parquet.Value // backs rows
	n    int             // rows buffered
}

// armNameBytes and modeNameBytes are armNames and modeNames for
// parquet.ByteArrayValue, which parquet-go copies.
var armNameBytes, modeNameBytes = func() (arms, modes [256][]byte) {
	for i := range arms {
		arms[i], modes[i] = []byte(armNames[i]), []byte(modeNames[i])
	}
	return arms, modes
}()

func newParquetEncoder(w io.Writer, s *Schema) *parquetEncoder {
	nodes := make(parquet.Group, len(s.columns))
	order := make(map[string]int, len(s.columns))
	for i, c := range s.columns {
		nodes[c.Name] = parquetNode(c.Type)
		order[c.Name] = i
	}
	fields := make([]parquet.Field, len(s.columns))
	for _, f := range nodes.Fields() {
		fields[order[f.Name()]] = f
	}
	name := snakeCase(s.typ.Name())
	if name == "" {
		name = "record"
	}
	schema := parquet.NewSchema(name, orderedGroup{Group: nodes, fields: fields})
	e := &parquetEncoder{
		s: s,
		pw: parquet.NewWriter(w, schema,
			parquet.Compression(&parquet.Snappy),
			parquet.MaxRowsPerRowGroup(int64(rowGroupRows(len(s.columns)))),
			parquet.KeyValueMetadata("mlbpf.record_type", s.typ.String()),
		),
	}
	nc := len(s.columns)
	batch := min(max(batchValues/nc, 1), 1024)
	e.rows = make([]parquet.Row, batch)
	e.vals = make([]parquet.Value, batch*nc)
	for i := range e.rows {
		e.rows[i] = e.vals[i*nc : (i+1)*nc : (i+1)*nc]
	}
	return e
}

func parquetNode(t ColumnType) parquet.Node {
	switch t {
	case TypeUint8:
		return parquet.Uint(8)
	case TypeUint16:
		return parquet.Uint(16)
	case TypeUint32:
		return parquet.Uint(32)
	case TypeUint64:
		return parquet.Uint(64)
	case TypeInt8:
		return parquet.Int(8)
	case TypeInt16:
		return parquet.Int(16)
	case TypeInt32:
		return parquet.Int(32)
	case TypeInt64:
		return parquet.Int(64)
	case TypeBool:
		return parquet.Leaf(parquet.BooleanType)
	default:
		return parquet.Encoded(parquet.String(), &parquet.RLEDictionary)
	}
}

// orderedGroup is a parquet.Group whose fields come in the schema's
// column order, not sorted by name as a parquet.Group's.
type orderedGroup struct {
	parquet.Group
	fields []parquet.Field
}

func (g orderedGroup) Fields() []parquet.Field { return g.fields }

func (e *parquetEncoder) writeRecords(d *model.Dataset) error {
	for i := range d.Len() {
		e.fill(e.rows[e.n], d.Record(i), d.PortionOffset+uint64(i))
		e.n++
		if e.n == len(e.rows) {
			if err := e.flushRows(); err != nil {
				return err
			}
		}
	}
	// parquet-go copies the values, strings included, on WriteRows: the
	// dataset may be reused once this returns.
	return e.flushRows()
}

func (e *parquetEncoder) fill(row parquet.Row, rec []byte, offset uint64) {
	for j := range e.s.plans {
		p := &e.s.plans[j]
		var v parquet.Value
		switch p.src {
		case srcInt:
			switch p.typ {
			case TypeBool:
				v = parquet.BooleanValue(p.uint(rec) != 0)
			case TypeUint64:
				v = parquet.Int64Value(int64(p.uint(rec)))
			case TypeInt64:
				v = parquet.Int64Value(p.int(rec))
			case TypeInt8, TypeInt16, TypeInt32:
				v = parquet.Int32Value(int32(p.int(rec)))
			default:
				v = parquet.Int32Value(int32(uint32(p.uint(rec))))
			}
		case srcCString:
			v = parquet.ByteArrayValue(p.cstring(rec))
		case srcStreamOffset:
			v = parquet.Int64Value(int64(offset))
		case srcArmName:
			v = nameValue(&armNameBytes, p, rec)
		default:
			v = nameValue(&modeNameBytes, p, rec)
		}
		row[j] = v.Level(0, 0, j)
	}
}

func nameValue(names *[256][]byte, p *plan, rec []byte) parquet.Value {
	if v := p.uint(rec); v < uint64(len(names)) {
		return parquet.ByteArrayValue(names[v])
	}
	return parquet.ByteArrayValue([]byte(p.name(rec)))
}

func (e *parquetEncoder) flushRows() error {
	if e.n == 0 {
		return nil
	}
	_, err := e.pw.WriteRows(e.rows[:e.n])
	e.n = 0
	return err
}

func (e *parquetEncoder) close() error {
	if err := e.flushRows(); err != nil {
		return err
	}
	return e.pw.Close()
}
