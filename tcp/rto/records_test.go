package rto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

func encode(t *testing.T, r *Record) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeFlow(t *testing.T) {
	r := Record{FctNs: uint64(42 * time.Millisecond), Family: 4, SynRetrans: 2, DsackDups: 1,
		Flags: uint8(tcprtoTcpRtoFlagsTCP_RTO_DONE), Setting: Setting{SynRtoMs: 20}}
	r.Hdr.Kind, r.Hdr.Size, r.Hdr.Arm = RecordKind, uint16(RecordSize), uint8(model.ArmModel)
	a := netip.MustParseAddr("::ffff:198.18.1.2").As16()
	r.Daddr = a
	var f Flow
	if err := DecodeFlow(encode(t, &r), &f); err != nil {
		t.Fatal(err)
	}
	if f.Peer != netip.MustParseAddr("198.18.1.2") || f.FCT != 42*time.Millisecond || !f.Done ||
		f.SynRetrans != 2 || f.DSACKs != 1 || f.Arm != model.ArmModel || f.Setting.SynRtoMs != 20 {
		t.Fatalf("%+v", f)
	}
	for name, mutate := range map[string]func(*Record){
		"kind":   func(r *Record) { r.Hdr.Kind = 2 },
		"size":   func(r *Record) { r.Hdr.Size-- },
		"arm":    func(r *Record) { r.Hdr.Arm = uint8(model.ArmCount) },
		"family": func(r *Record) { r.Family = 5 },
	} {
		bad := r
		mutate(&bad)
		if err := DecodeFlow(encode(t, &bad), &f); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v, want ErrBadRecord", name, err)
		}
	}
	if err := DecodeFlow(encode(t, &r)[:RecordSize-1], &f); !errors.Is(err, ErrBadRecord) {
		t.Errorf("short: %v", err)
	}
}
