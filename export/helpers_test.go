package export

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strconv"
	"structs"
	"testing"
	"unsafe"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

var syntheticType = reflect.TypeFor[synthetic.Record]()

// syntheticColumns is the export schema of synthetic.Record.
var syntheticColumns = []Column{
	{Name: "stream_offset", Type: TypeUint64, Derived: true},
	{Name: "ts_ns", Type: TypeUint64, Field: "Hdr.TsNs"},
	{Name: "kind", Type: TypeUint16, Field: "Hdr.Kind"},
	{Name: "size", Type: TypeUint16, Field: "Hdr.Size"},
	{Name: "arm", Type: TypeUint8, Field: "Hdr.Arm"},
	{Name: "arm_name", Type: TypeString, Field: "Hdr.Arm", Derived: true},
	{Name: "mode", Type: TypeUint8, Field: "Hdr.Mode"},
	{Name: "mode_name", Type: TypeString, Field: "Hdr.Mode", Derived: true},
	{Name: "reserved", Type: TypeUint16, Field: "Hdr.Reserved"},
	{Name: "generation", Type: TypeUint32, Field: "Hdr.Generation"},
	{Name: "cpu", Type: TypeUint32, Field: "Hdr.Cpu"},
	{Name: "key", Type: TypeUint32, Field: "Key"},
	{Name: "default_value", Type: TypeUint32, Field: "DefaultValue"},
	{Name: "recommended", Type: TypeUint32, Field: "Recommended"},
	{Name: "applied", Type: TypeUint32, Field: "Applied"},
}

// syntheticRecords returns n synthetic records covering the edges: a
// ts_ns above 2^53 and 2^63, the largest uint32, every arm and mode and
// values out of their range.
func syntheticRecords(n int) []synthetic.Record {
	recs := make([]synthetic.Record, n)
	for i := range recs {
		r := &recs[i]
		r.Hdr.TsNs = 1<<63 + 1<<53 + uint64(i)*1_000_003 + 1 // odd: not a float64
		r.Hdr.Kind = loader.RecordSynthetic
		r.Hdr.Size = uint16(synthetic.RecordSize)
		r.Hdr.Arm = uint8(i % (model.ArmCount + 2))   // Arm(7), Arm(8) too
		r.Hdr.Mode = uint8(i % (model.ModeCount + 1)) // Mode(5) too
		r.Hdr.Generation = uint32(i / 3)
		r.Hdr.Cpu = uint32(i % 4)
		r.Key = uint32(i) * 2654435761
		r.DefaultValue = r.Key % synthetic.DefaultModulus
		r.Recommended = ^uint32(0) - uint32(i)
		r.Applied = uint32(i)
	}
	if n > 0 {
		recs[0].Hdr.TsNs = ^uint64(0)
	}
	return recs
}

// syntheticRow is the row, as text, that a synthetic record at stream
// offset off exports to, computed field by field.
func syntheticRow(off uint64, r synthetic.Record) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	return []string{
		u(off), u(r.Hdr.TsNs), u(uint64(r.Hdr.Kind)), u(uint64(r.Hdr.Size)),
		u(uint64(r.Hdr.Arm)), model.Arm(r.Hdr.Arm).String(),
		u(uint64(r.Hdr.Mode)), model.Mode(r.Hdr.Mode).String(),
		u(uint64(r.Hdr.Reserved)), u(uint64(r.Hdr.Generation)), u(uint64(r.Hdr.Cpu)),
		u(uint64(r.Key)), u(uint64(r.DefaultValue)), u(uint64(r.Recommended)), u(uint64(r.Applied)),
	}
}

// connRecord stands for a bpf2go record with what synthetic.Record lacks:
// a named header type, arrays, a nested struct, a char array, signed
// integers, a bool and explicit padding.
type connRecord struct {
	_     structs.HostLayout
	Hdr   loader.RecordHeader
	Saddr [4]uint32
	Daddr [16]uint8
	Ports struct {
		_     structs.HostLayout
		Sport uint16
		Dport uint16
	}
	DeltaUs int32
	Matrix  [2][2]int16
	Comm    [8]int8
	Ok      bool
	_       [7]byte
	Bytes   int64
}

var connType = reflect.TypeFor[connRecord]()

func connNames() []string {
	names := []string{"stream_offset", "ts_ns", "kind", "size", "arm", "arm_name", "mode", "mode_name", "reserved", "generation", "cpu"}
	for i := range 4 {
		names = append(names, "saddr_"+strconv.Itoa(i))
	}
	for i := range 16 {
		names = append(names, "daddr_"+strconv.Itoa(i))
	}
	return append(names, "ports_sport", "ports_dport", "delta_us", "matrix_0_0", "matrix_0_1", "matrix_1_0", "matrix_1_1", "comm", "ok", "bytes")
}

func connRecords() []connRecord {
	recs := make([]connRecord, 4)
	for i := range recs {
		r := &recs[i]
		r.Hdr.TsNs = 1<<60 + uint64(i)
		r.Hdr.Kind = loader.RecordTCPConn
		r.Hdr.Size = uint16(unsafe.Sizeof(connRecord{}))
		r.Hdr.Arm = uint8(model.ArmModel)
		r.Hdr.Mode = uint8(model.ModeRecommendation)
		r.Saddr = [4]uint32{0, 0, 0xffff, 0x0100007f + uint32(i)}
		for j := range r.Daddr {
			r.Daddr[j] = uint8(j * 17)
		}
		r.Ports.Sport, r.Ports.Dport = 40000+uint16(i), 443
		r.DeltaUs = -1_000_000 * int32(i+1)
		r.Matrix = [2][2]int16{{-32768, 1}, {2, 32767}}
		r.Ok = i%2 == 0
		r.Bytes = -1 << 62
	}
	copy(recs[0].Comm[:], cchars("cubic"))
	copy(recs[1].Comm[:], cchars("a,\"b\"\n\t"))  // quotes, comma, line break
	copy(recs[2].Comm[:], cchars(" \xff\x01bbr")) // leading space, invalid UTF-8, control
	copy(recs[3].Comm[:], cchars(`say "hi"`))     // a quote alone, no NUL
	return recs
}

func cchars(s string) []int8 {
	b := make([]int8, len(s))
	for i := range len(s) {
		b[i] = int8(s[i])
	}
	return b
}

// connRow is the row a connRecord at off exports to.
func connRow(off uint64, r connRecord) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	d := func(v int64) string { return strconv.FormatInt(v, 10) }
	row := []string{
		u(off), u(r.Hdr.TsNs), u(uint64(r.Hdr.Kind)), u(uint64(r.Hdr.Size)),
		u(uint64(r.Hdr.Arm)), model.Arm(r.Hdr.Arm).String(),
		u(uint64(r.Hdr.Mode)), model.Mode(r.Hdr.Mode).String(),
		u(uint64(r.Hdr.Reserved)), u(uint64(r.Hdr.Generation)), u(uint64(r.Hdr.Cpu)),
	}
	for _, v := range r.Saddr {
		row = append(row, u(uint64(v)))
	}
	for _, v := range r.Daddr {
		row = append(row, u(uint64(v)))
	}
	row = append(row, u(uint64(r.Ports.Sport)), u(uint64(r.Ports.Dport)), d(int64(r.DeltaUs)))
	for _, m := range r.Matrix {
		for _, v := range m {
			row = append(row, d(int64(v)))
		}
	}
	comm := make([]byte, 0, len(r.Comm))
	for _, c := range r.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return append(row, string(bytes.ToValidUTF8(comm, []byte("\uFFFD"))), strconv.FormatBool(r.Ok), d(r.Bytes))
}

// datasetOf packs records, encoded little-endian with encoding/binary as
// the kernel lays them out, into an EXTRACTED_COMPLETELY dataset at
// stream offset off.
func datasetOf[T any](t testing.TB, off uint64, recs []T) *model.Dataset {
	t.Helper()
	size := int(unsafe.Sizeof(*new(T)))
	if n := binary.Size(new(T)); n != size {
		t.Fatalf("binary.Size %d != unsafe.Sizeof %d: padding is not explicit", n, size)
	}
	d, err := model.NewDataset(model.DatasetStructure, size, max(len(recs), 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.MarkClean(); err != nil {
		t.Fatal(err)
	}
	d.PortionOffset = off
	for i := range recs {
		b, err := binary.Append(nil, binary.LittleEndian, &recs[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	if len(recs) > 0 {
		if err := d.Extracted(false); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// exportBytes exports datasets of records of type typ in format f.
func exportBytes(t testing.TB, f Format, typ reflect.Type, ds ...*model.Dataset) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, f, typ)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := w.WriteDataset(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
