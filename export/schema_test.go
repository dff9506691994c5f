package export

import (
	"errors"
	"reflect"
	"slices"
	"structs"
	"testing"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/synthetic"
)

func TestSchemaSynthetic(t *testing.T) {
	s, err := NewSchema(syntheticType)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Columns(); !slices.Equal(got, syntheticColumns) {
		t.Fatalf("columns\n%+v\nwant\n%+v", got, syntheticColumns)
	}
	if s.RecordSize() != synthetic.RecordSize {
		t.Fatalf("record size %d, want %d", s.RecordSize(), synthetic.RecordSize)
	}
	// A pointer type gives the same schema.
	p, err := NewSchema(reflect.TypeFor[*synthetic.Record]())
	if err != nil || !slices.Equal(p.Columns(), syntheticColumns) {
		t.Fatalf("schema of *synthetic.Record: %v, %v", p, err)
	}
}

func TestSchemaNested(t *testing.T) {
	s, err := NewSchema(connType)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Names(), connNames(); !slices.Equal(got, want) {
		t.Fatalf("names\n%q\nwant\n%q", got, want)
	}
	types := map[string]ColumnType{
		"saddr_3": TypeUint32, "daddr_15": TypeUint8, "ports_dport": TypeUint16, "delta_us": TypeInt32,
		"matrix_1_0": TypeInt16, "comm": TypeString, "ok": TypeBool, "bytes": TypeInt64, "arm_name": TypeString,
	}
	fields := map[string]string{"saddr_3": "Saddr[3]", "ports_dport": "Ports.Dport", "matrix_1_0": "Matrix[1][0]", "ts_ns": "Hdr.TsNs"}
	for _, c := range s.Columns() {
		if want, ok := types[c.Name]; ok && c.Type != want {
			t.Errorf("%s: type %v, want %v", c.Name, c.Type, want)
		}
		if want, ok := fields[c.Name]; ok && c.Field != want {
			t.Errorf("%s: field %q, want %q", c.Name, c.Field, want)
		}
	}
}

func TestSchemaHeaderOnlyFirst(t *testing.T) {
	// A header anywhere but first is an ordinary nested struct: prefixed,
	// without derived names.
	type rec struct {
		_     structs.HostLayout
		Key   uint64
		Inner loader.RecordHeader
	}
	s, err := NewSchema(reflect.TypeFor[rec]())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"stream_offset", "key", "inner_ts_ns", "inner_kind", "inner_size", "inner_arm", "inner_mode", "inner_reserved", "inner_generation", "inner_cpu"}
	if got := s.Names(); !slices.Equal(got, want) {
		t.Fatalf("names %q, want %q", got, want)
	}
	// Nor is a struct of another layout a header.
	type notHeader struct {
		_    structs.HostLayout
		TsNs uint64
		Arm  uint8
	}
	type rec2 struct {
		Hdr notHeader
	}
	s, err = NewSchema(reflect.TypeFor[rec2]())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Names(), []string{"stream_offset", "hdr_ts_ns", "hdr_arm"}; !slices.Equal(got, want) {
		t.Fatalf("names %q, want %q", got, want)
	}
}

func TestSchemaRefuses(t *testing.T) {
	type clash struct {
		A   [2]uint8
		A_0 uint8
	}
	type headerClash struct {
		Hdr loader.RecordHeader
		Arm uint32
	}
	type derivedClash struct {
		StreamOffset uint64
	}
	type withFloat struct{ X float64 }
	type withInt struct{ X int }
	type withSlice struct{ X []uint8 }
	type withPointer struct{ X *uint8 }
	type empty struct{ _ structs.HostLayout }
	type huge struct{ X [MaxColumns]uint8 }
	for _, typ := range []reflect.Type{
		nil,
		reflect.TypeFor[uint32](),
		reflect.TypeFor[[4]uint32](),
		reflect.TypeFor[clash](),
		reflect.TypeFor[headerClash](),
		reflect.TypeFor[derivedClash](),
		reflect.TypeFor[withFloat](),
		reflect.TypeFor[withInt](),
		reflect.TypeFor[withSlice](),
		reflect.TypeFor[withPointer](),
		reflect.TypeFor[empty](),
		reflect.TypeFor[huge](),
	} {
		if _, err := NewSchema(typ); !errors.Is(err, ErrUnsupportedType) {
			t.Errorf("NewSchema(%v): %v, want %v", typ, err, ErrUnsupportedType)
		}
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"TsNs":         "ts_ns",
		"DefaultValue": "default_value",
		"Cpu":          "cpu",
		"CPU":          "cpu",
		"RttMinUs":     "rtt_min_us",
		"Ipv6Test":     "ipv6_test",
		"Saddr6":       "saddr6",
		"HTTPServer":   "http_server",
		"SrttUS":       "srtt_us",
		"FOO_BAR":      "foo_bar",
		"A_0":          "a_0",
		"X":            "x",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestColumnTypeString(t *testing.T) {
	if got := TypeUint64.String(); got != "uint64" {
		t.Errorf("TypeUint64 = %q", got)
	}
	if got := ColumnType(0).String(); got != "ColumnType(0)" {
		t.Errorf("ColumnType(0) = %q", got)
	}
}
