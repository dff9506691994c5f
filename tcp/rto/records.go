package rto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/mlbpf/mlbpf/model"
)

// Record is struct tcp_rto_record, one connection as the kernel reports it
// when the connection closes.
type Record = tcprtoTcpRtoRecord

// RecordSize is the size in bytes of a Record in the ring buffer.
const RecordSize = int(unsafe.Sizeof(Record{}))

// RecordKind is the record kind of a Record (its header's kind).
const RecordKind = uint16(tcprtoTcpRtoRecordKindTCP_RTO_REC_KIND)

// Flow is a decoded Record.
type Flow struct {
	Arm        model.Arm
	Mode       model.Mode
	Generation uint32
	Peer       netip.Addr // IPv4 unmapped
	Port       uint16
	// FCT is the flow completion time: connect to the acknowledgement of
	// the data and FIN (Done), or to the close if that never came.
	FCT       time.Duration
	Done      bool
	Handshake time.Duration // connect to established; 0 if never
	// Setting is what the connection got (Default on every arm but MODEL).
	Setting       Setting
	BytesAcked    uint64
	BytesReceived uint64
	Retrans       uint32 // segments retransmitted, SYNs included
	SynRetrans    uint32
	Timeouts      uint32 // retransmission timer expiries
	DSACKs        uint32 // DSACKed segments: spurious retransmissions
	Reordering    uint32
	SRTT, MinRTT  time.Duration
	SegsOut       uint32
	// OutOfRange: the setting drawn was outside what the kernel accepts;
	// SetFailed: the kernel refused it (both: arm REJECTED).
	OutOfRange, SetFailed bool
}

// ErrBadRecord is wrapped by DecodeFlow's errors.
var ErrBadRecord = errors.New("bad tcp/rto record")

// DecodeFlow decodes one ring buffer record, refusing anything that is not
// a tcp_rto_record.
func DecodeFlow(b []byte, f *Flow) error {
	var r Record
	if len(b) < RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadRecord, len(b), RecordSize)
	}
	if _, err := binary.Decode(b[:RecordSize], binary.NativeEndian, &r); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if r.Hdr.Kind != RecordKind || int(r.Hdr.Size) != RecordSize {
		return fmt.Errorf("%w: kind %d size %d, want %d and %d", ErrBadRecord, r.Hdr.Kind, r.Hdr.Size, RecordKind, RecordSize)
	}
	if model.Arm(r.Hdr.Arm) >= model.ArmCount || r.Family != 4 && r.Family != 6 {
		return fmt.Errorf("%w: arm %d family %d", ErrBadRecord, r.Hdr.Arm, r.Family)
	}
	flags := tcprtoTcpRtoFlags(r.Flags)
	*f = Flow{
		Arm: model.Arm(r.Hdr.Arm), Mode: model.Mode(r.Hdr.Mode), Generation: r.Hdr.Generation,
		Peer: netip.AddrFrom16(r.Daddr).Unmap(), Port: r.Dport,
		FCT: time.Duration(r.FctNs), Done: flags&tcprtoTcpRtoFlagsTCP_RTO_DONE != 0,
		Handshake: time.Duration(r.HandshakeNs), Setting: r.Setting,
		BytesAcked: r.BytesAcked, BytesReceived: r.BytesReceived,
		Retrans: r.TotalRetrans, SynRetrans: r.SynRetrans, Timeouts: r.RtoTimeouts,
		DSACKs: r.DsackDups, Reordering: r.ReordSeen,
		SRTT: time.Duration(r.SrttUs) * time.Microsecond, MinRTT: time.Duration(r.RttMinUs) * time.Microsecond,
		SegsOut:    r.DataSegsOut,
		OutOfRange: flags&tcprtoTcpRtoFlagsTCP_RTO_OUT_OF_RANGE != 0,
		SetFailed:  flags&tcprtoTcpRtoFlagsTCP_RTO_SET_FAILED != 0,
	}
	return nil
}
