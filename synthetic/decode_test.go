package synthetic

import (
	"encoding/binary"
	"testing"

	"github.com/mlbpf/mlbpf/loader"
)

func encode(r Record) []byte {
	b := make([]byte, RecordSize)
	binary.LittleEndian.PutUint64(b[0:], r.Hdr.TsNs)
	binary.LittleEndian.PutUint16(b[8:], r.Hdr.Kind)
	binary.LittleEndian.PutUint16(b[10:], r.Hdr.Size)
	b[12], b[13] = r.Hdr.Arm, r.Hdr.Mode
	binary.LittleEndian.PutUint32(b[16:], r.Hdr.Generation)
	binary.LittleEndian.PutUint32(b[20:], r.Hdr.Cpu)
	binary.LittleEndian.PutUint32(b[24:], r.Key)
	binary.LittleEndian.PutUint32(b[28:], r.DefaultValue)
	binary.LittleEndian.PutUint32(b[32:], r.Recommended)
	binary.LittleEndian.PutUint32(b[36:], r.Applied)
	return b
}

func validRecord() Record {
	var r Record
	r.Hdr.TsNs = 1 << 40
	r.Hdr.Kind = loader.RecordSynthetic
	r.Hdr.Size = uint16(RecordSize)
	r.Hdr.Arm = 4
	r.Hdr.Mode = 3
	r.Hdr.Generation = 9
	r.Key, r.DefaultValue, r.Recommended, r.Applied = 5, 5, 42, 42
	return r
}

func TestDecodeRecord(t *testing.T) {
	want := validRecord()
	var got Record
	if err := DecodeRecord(encode(want), &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}

	bad := map[string]func(*Record){
		"wrong kind": func(r *Record) { r.Hdr.Kind = loader.RecordTCPConn },
		"wrong size": func(r *Record) { r.Hdr.Size = 8 },
		"arm range":  func(r *Record) { r.Hdr.Arm = uint8(loader.ArmCount) },
	}
	for name, mutate := range bad {
		r := validRecord()
		mutate(&r)
		if err := DecodeRecord(encode(r), &got); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if err := DecodeRecord(encode(want)[:RecordSize-1], &got); err == nil {
		t.Error("short record decoded without error")
	}
}

// FuzzDecodeRecord: no input panics the decoder, and whatever it accepts
// re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encode(validRecord()))
	f.Add([]byte{})
	f.Add(make([]byte, RecordSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := DecodeRecord(b, &r); err != nil {
			return
		}
		if r.Hdr.Kind != loader.RecordSynthetic || int(r.Hdr.Size) != RecordSize || r.Hdr.Arm >= uint8(loader.ArmCount) {
			t.Fatalf("accepted an invalid record: %+v", r)
		}
		if got := encode(r); string(got[:14]) != string(b[:14]) || string(got[16:RecordSize]) != string(b[16:RecordSize]) {
			t.Fatalf("re-encoding %x gave %x", b[:RecordSize], got)
		}
	})
}
