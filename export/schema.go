package export

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Names of the columns that do not come from a field of the record.
const (
	ColumnStreamOffset = "stream_offset"
	ColumnArmName      = "arm_name"
	ColumnModeName     = "mode_name"
)

// MaxColumns bounds the columns of a schema: a record whose fields flatten
// to more (a large array, say) is refused rather than exported as an
// unreadably wide table.
const MaxColumns = 4096

// ErrUnsupportedType is returned by NewSchema for a record type it cannot
// flatten into columns.
var ErrUnsupportedType = errors.New("unsupported record type")

// ColumnType is the type of a column's values.
type ColumnType uint8

// Column types. Integers keep their width and signedness in every format
// that can say so (Parquet INT(bits, signed) logical types).
const (
	TypeUint8 ColumnType = iota + 1
	TypeUint16
	TypeUint32
	TypeUint64
	TypeInt8
	TypeInt16
	TypeInt32
	TypeInt64
	TypeBool
	TypeString
)

var columnTypeNames = [...]string{
	TypeUint8: "uint8", TypeUint16: "uint16", TypeUint32: "uint32", TypeUint64: "uint64",
	TypeInt8: "int8", TypeInt16: "int16", TypeInt32: "int32", TypeInt64: "int64",
	TypeBool: "bool", TypeString: "string",
}

// String returns the type's name as in Go, "uint64" for example.
func (t ColumnType) String() string {
	if int(t) < len(columnTypeNames) && columnTypeNames[t] != "" {
		return columnTypeNames[t]
	}
	return "ColumnType(" + strconv.Itoa(int(t)) + ")"
}

// Column is one column of an export.
type Column struct {
	// Name is the column's name: see the package documentation for the
	// naming rule.
	Name string
	Type ColumnType
	// Field is the Go path of the record field the column comes from,
	// "Hdr.TsNs" or "Daddr[3]" for example. For the derived arm_name and
	// mode_name, it is the field they name; for stream_offset, it is
	// empty.
	Field string
	// Derived reports that the column is computed, not a field of the
	// record as it is: stream_offset, arm_name, mode_name.
	Derived bool
}

// source says where a column's values come from.
type source uint8

const (
	srcInt          source = iota // an integer or bool field
	srcCString                    // a char array, up to its first NUL
	srcStreamOffset               // the dataset's PortionOffset + index
	srcArmName                    // model.Arm of the integer field
	srcModeName                   // model.Mode of the integer field
)

// plan is how to read one column from a record: computed once per record
// type, so decoding a record reflects on nothing.
type plan struct {
	src    source
	typ    ColumnType
	signed bool
	off    int // byte offset in the record
	size   int // bytes: 1, 2, 4 or 8 for integers, the array length for strings
}

// Schema is the columns of the records of one Go type: a bpf2go-generated
// record struct, flattened. It is immutable and safe for concurrent use.
type Schema struct {
	typ     reflect.Type
	size    int
	columns []Column
	plans   []plan
}

// NewSchema derives the columns of the records of type t, a struct (or a
// pointer to one) of fixed-size integers, bools, nested structs and fixed
// arrays of those, as bpf2go generates for a C struct. Blank fields
// (structs.HostLayout, padding) are skipped.
func NewSchema(t reflect.Type) (*Schema, error) {
	if t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("deriving export schema of %v: %w: want a struct", t, ErrUnsupportedType)
	}
	if t.Size() == 0 {
		return nil, fmt.Errorf("deriving export schema of %v: %w: struct of size 0", t, ErrUnsupportedType)
	}
	b := schemaBuilder{s: &Schema{typ: t, size: int(t.Size())}, names: make(map[string]string)}
	b.add(Column{Name: ColumnStreamOffset, Type: TypeUint64, Derived: true}, plan{src: srcStreamOffset, typ: TypeUint64})
	b.walk(t, 0, "", "", true)
	if b.err != nil {
		return nil, fmt.Errorf("deriving export schema of %v: %w", t, b.err)
	}
	return b.s, nil
}

// RecordType returns the Go type of the records.
func (s *Schema) RecordType() reflect.Type { return s.typ }

// RecordSize returns the size in bytes of one record.
func (s *Schema) RecordSize() int { return s.size }

// Columns returns the columns in the order every format writes them.
func (s *Schema) Columns() []Column { return slices.Clone(s.columns) }

// Names returns the column names in order.
func (s *Schema) Names() []string {
	names := make([]string, len(s.columns))
	for i, c := range s.columns {
		names[i] = c.Name
	}
	return names
}

type schemaBuilder struct {
	s     *Schema
	names map[string]string // column name → Go path, to report clashes
	err   error
}

func (b *schemaBuilder) add(c Column, p plan) {
	if b.err != nil {
		return
	}
	if prev, ok := b.names[c.Name]; ok {
		b.err = fmt.Errorf("%w: column %q of field %s clashes with that of %s", ErrUnsupportedType, c.Name, fieldOrDerived(c.Field), fieldOrDerived(prev))
		return
	}
	if len(b.s.columns) >= MaxColumns {
		b.err = fmt.Errorf("%w: more than %d columns", ErrUnsupportedType, MaxColumns)
		return
	}
	path := c.Field
	if c.Derived {
		path = ""
	}
	b.names[c.Name] = path
	b.s.columns = append(b.s.columns, c)
	b.s.plans = append(b.s.plans, p)
}

func fieldOrDerived(path string) string {
	if path == "" {
		return "(derived)"
	}
	return path
}

// walk adds the columns of the fields of struct t at offset base.
func (b *schemaBuilder) walk(t reflect.Type, base uintptr, prefix, path string, top bool) {
	first := true
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "_" {
			continue
		}
		fpath := joinPath(path, f.Name)
		if top && first && f.Offset == 0 && isRecordHeader(f.Type) {
			b.walkHeader(f.Type, fpath)
		} else {
			b.value(f.Type, base+f.Offset, prefix+snakeCase(f.Name), fpath)
		}
		first = false
		if b.err != nil {
			return
		}
	}
}

// walkHeader adds the columns of a record's mlbpf_record_hdr, unprefixed,
// each of arm and mode followed by its name.
func (b *schemaBuilder) walkHeader(t reflect.Type, path string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "_" {
			continue
		}
		name, fpath := snakeCase(f.Name), joinPath(path, f.Name)
		b.value(f.Type, f.Offset, name, fpath)
		if b.err != nil {
			return
		}
		p := b.s.plans[len(b.s.plans)-1]
		switch f.Name {
		case "Arm":
			p.src, p.typ = srcArmName, TypeString
			b.add(Column{Name: ColumnArmName, Type: TypeString, Field: fpath, Derived: true}, p)
		case "Mode":
			p.src, p.typ = srcModeName, TypeString
			b.add(Column{Name: ColumnModeName, Type: TypeString, Field: fpath, Derived: true}, p)
		}
	}
}

// value adds the columns of one value of type t at offset off.
func (b *schemaBuilder) value(t reflect.Type, off uintptr, name, path string) {
	if b.err != nil {
		return
	}
	if typ, ok := intTypes[t.Kind()]; ok {
		b.add(Column{Name: name, Type: typ, Field: path}, plan{
			src: srcInt, typ: typ, off: int(off), size: int(t.Size()),
			signed: typ >= TypeInt8 && typ <= TypeInt64,
		})
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		b.walk(t, off, name+"_", path, false)
	case reflect.Array:
		elem := t.Elem()
		if elem.Kind() == reflect.Int8 {
			// bpf2go's type of a C char array.
			b.add(Column{Name: name, Type: TypeString, Field: path}, plan{src: srcCString, typ: TypeString, off: int(off), size: t.Len()})
			return
		}
		for i := range t.Len() {
			is := strconv.Itoa(i)
			b.value(elem, off+uintptr(i)*elem.Size(), name+"_"+is, path+"["+is+"]")
		}
	default:
		b.err = fmt.Errorf("%w: field %s of type %v: want fixed-size integers, bools, structs or arrays", ErrUnsupportedType, path, t)
	}
}

var intTypes = map[reflect.Kind]ColumnType{
	reflect.Uint8: TypeUint8, reflect.Uint16: TypeUint16, reflect.Uint32: TypeUint32, reflect.Uint64: TypeUint64,
	reflect.Int8: TypeInt8, reflect.Int16: TypeInt16, reflect.Int32: TypeInt32, reflect.Int64: TypeInt64,
	reflect.Bool: TypeBool,
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// headerLayout is the layout of struct mlbpf_record_hdr: its fields'
// names, offsets and kinds.
var headerLayout = layoutOf(reflect.TypeFor[loader.RecordHeader]())

type fieldLayout struct {
	name string
	off  uintptr
	kind reflect.Kind
}

func layoutOf(t reflect.Type) []fieldLayout {
	var l []fieldLayout
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name != "_" {
			l = append(l, fieldLayout{f.Name, f.Offset, f.Type.Kind()})
		}
	}
	return l
}

// isRecordHeader reports whether t is laid out as struct mlbpf_record_hdr:
// bpf2go generates one anonymous struct per record type, not a shared
// named type, so it is recognized by its fields.
func isRecordHeader(t reflect.Type) bool {
	return t.Kind() == reflect.Struct &&
		t.Size() == uintptr(loader.RecordHeaderSize) &&
		slices.Equal(layoutOf(t), headerLayout)
}

// snakeCase turns a Go field name back into the C name bpf2go made it
// from: TsNs → ts_ns, Ipv6Test → ipv6_test, CPU → cpu. An underscore goes
// before an upper-case letter that follows a lower-case letter or a digit,
// or that starts a word after an acronym (HTTPServer → http_server).
func snakeCase(s string) string {
	var sb strings.Builder
	runes := []rune(s)
	for i, r := range runes {
		if unicode.IsUpper(r) && i > 0 {
			prev := runes[i-1]
			nextLower := i+1 < len(runes) && unicode.IsLower(runes[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				sb.WriteByte('_')
			}
		}
		sb.WriteRune(unicode.ToLower(r))
	}
	return sb.String()
}

// Reading values. Records are little-endian: the layout of bpf2go's
// *_bpfel.go types.

func (p *plan) uint(rec []byte) uint64 {
	switch p.size {
	case 1:
		return uint64(rec[p.off])
	case 2:
		return uint64(binary.LittleEndian.Uint16(rec[p.off:]))
	case 4:
		return uint64(binary.LittleEndian.Uint32(rec[p.off:]))
	default:
		return binary.LittleEndian.Uint64(rec[p.off:])
	}
}

func (p *plan) int(rec []byte) int64 {
	switch p.size {
	case 1:
		return int64(int8(rec[p.off]))
	case 2:
		return int64(int16(binary.LittleEndian.Uint16(rec[p.off:])))
	case 4:
		return int64(int32(binary.LittleEndian.Uint32(rec[p.off:])))
	default:
		return int64(binary.LittleEndian.Uint64(rec[p.off:]))
	}
}

// cstring returns a char array's bytes up to its first NUL, aliasing rec,
// with invalid UTF-8 replaced by U+FFFD (then not aliasing rec).
func (p *plan) cstring(rec []byte) []byte {
	b := rec[p.off : p.off+p.size]
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	if !utf8.Valid(b) {
		return bytes.ToValidUTF8(b, replacementChar)
	}
	return b
}

var replacementChar = []byte("\uFFFD")

// enumNames holds the names of the arm and mode values a uint8 header
// field can hold, computed once.
var armNames, modeNames = func() (arms, modes [256]string) {
	for i := range arms {
		arms[i] = model.Arm(i).String()
		modes[i] = model.Mode(i).String()
	}
	return arms, modes
}()

// name returns the arm or mode name of the field p reads.
func (p *plan) name(rec []byte) string {
	v := p.uint(rec)
	switch {
	case p.src == srcArmName && v < uint64(len(armNames)):
		return armNames[v]
	case p.src == srcArmName:
		return model.Arm(v).String()
	case v < uint64(len(modeNames)):
		return modeNames[v]
	default:
		return model.Mode(v).String()
	}
}
