package tcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Record is struct tcp_conn_record, one connection as the kernel reports
// it when the connection closes.
type Record = tcpccTcpConnRecord

// RecordSize is the size in bytes of a Record in the ring buffer.
const RecordSize = int(unsafe.Sizeof(Record{}))

// Conn is a decoded Record.
type Conn struct {
	Arm        model.Arm
	Mode       model.Mode
	Generation uint32
	// Peer is the remote address (IPv4 unmapped) and Port its port.
	Peer    netip.Addr
	Port    uint16
	Passive bool
	// Duration runs from the decision (connect or accept) to TCP_CLOSE.
	Duration      time.Duration
	BytesAcked    uint64
	BytesReceived uint64
	// MaxRate is the peak delivery rate the kernel sampled, in bytes/s,
	// when RateSampled (connections on the default algorithm only).
	MaxRate     float64
	RateSampled bool
	SRTT        time.Duration
	MinRTT      time.Duration
	Retrans     uint32 // segments retransmitted
	SegsOut     uint32 // data segments sent, retransmissions included
	MSS         uint32
	// CC is the algorithm the connection ran; Recommended the one the
	// map held at the decision ("" for none).
	CC, Recommended string
	// SetFailed: the kernel refused the recommendation (arm REJECTED).
	SetFailed bool
	// Reverted: on the model's algorithm (arm MODEL) until the model fell
	// back mid-connection, then on the default: evidence for neither.
	Reverted bool
}

// Goodput returns the bytes sent and acknowledged per second.
func (c *Conn) Goodput() float64 {
	if c.Duration <= 0 {
		return 0
	}
	return float64(c.BytesAcked) / c.Duration.Seconds()
}

// Loss returns the share of data segments retransmitted, the
// connection's loss rate as its sender saw it.
func (c *Conn) Loss() float64 {
	if c.SegsOut == 0 {
		return 0
	}
	return min(float64(c.Retrans)/float64(c.SegsOut), 1)
}

// ErrBadRecord is wrapped by DecodeConn's errors.
var ErrBadRecord = errors.New("bad tcp connection record")

// DecodeConn decodes one ring buffer record, refusing anything that is
// not a tcp_conn_record of the right size.
func DecodeConn(b []byte, c *Conn) error {
	var r Record
	if len(b) < RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadRecord, len(b), RecordSize)
	}
	if _, err := binary.Decode(b[:RecordSize], binary.LittleEndian, &r); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if r.Hdr.Kind != loader.RecordTCPConn || int(r.Hdr.Size) != RecordSize {
		return fmt.Errorf("%w: kind %d size %d, want kind %d size %d", ErrBadRecord,
			r.Hdr.Kind, r.Hdr.Size, loader.RecordTCPConn, RecordSize)
	}
	if int(r.Hdr.Arm) >= model.ArmCount {
		return fmt.Errorf("%w: arm %d out of range", ErrBadRecord, r.Hdr.Arm)
	}
	if r.Family != 4 && r.Family != 6 {
		return fmt.Errorf("%w: address family %d", ErrBadRecord, r.Family)
	}
	*c = Conn{
		Arm:           model.Arm(r.Hdr.Arm),
		Mode:          model.Mode(r.Hdr.Mode),
		Generation:    r.Hdr.Generation,
		Peer:          netip.AddrFrom16(r.Daddr).Unmap(),
		Port:          r.Dport,
		Passive:       r.Flags&uint8(tcpccTcpConnFlagsTCP_CONN_PASSIVE) != 0,
		Duration:      time.Duration(r.DurationNs),
		BytesAcked:    r.BytesAcked,
		BytesReceived: r.BytesReceived,
		MaxRate:       float64(r.MaxRateBps),
		RateSampled:   r.Flags&uint8(tcpccTcpConnFlagsTCP_CONN_RATE) != 0,
		SRTT:          time.Duration(r.SrttUs) * time.Microsecond,
		MinRTT:        time.Duration(r.RttMinUs) * time.Microsecond,
		Retrans:       r.TotalRetrans,
		SegsOut:       r.DataSegsOut,
		MSS:           r.Mss,
		CC:            cString(r.Cc[:]),
		Recommended:   cString(r.Recommended[:]),
		SetFailed:     r.Flags&uint8(tcpccTcpConnFlagsTCP_CONN_SET_FAILED) != 0,
		Reverted:      r.Flags&uint8(tcpccTcpConnFlagsTCP_CONN_REVERTED) != 0,
	}
	return nil
}

func cString(b []int8) string {
	buf := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		buf = append(buf, byte(c))
	}
	return string(buf)
}

func cName(s string) (out [16]int8) {
	for i := 0; i < len(s) && i < len(out)-1; i++ {
		out[i] = int8(s[i])
	}
	return out
}

// RecordSource delivers the raw records of the model's ring buffer. It
// hides which ring buffer reader is used, so that it can be swapped.
type RecordSource interface {
	// Next returns the next record, valid until the following call, or
	// an error wrapping os.ErrDeadlineExceeded when none arrives before
	// deadline (a deadline in the past polls).
	Next(deadline time.Time) ([]byte, error)
	// Close releases the reader and unblocks a pending Next.
	Close() error
}

// NewRingbufSource reads m with github.com/cilium/ebpf/ringbuf.
func NewRingbufSource(m *ebpf.Map) (RecordSource, error) {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("reading tcp connection records: %w", err)
	}
	return &ciliumSource{rd: rd}, nil
}

type ciliumSource struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
}

func (s *ciliumSource) Next(deadline time.Time) ([]byte, error) {
	s.rd.SetDeadline(deadline)
	if err := s.rd.ReadInto(&s.rec); err != nil {
		return nil, err
	}
	return s.rec.RawSample, nil
}

func (s *ciliumSource) Close() error { return s.rd.Close() }

// isTimeout reports whether err is a RecordSource's "nothing now".
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
