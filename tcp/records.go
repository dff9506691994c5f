package tcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
	"unsafe"

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

// Offsets of a Record's fields in the ring buffer's bytes.
var (
	offKind    = int(unsafe.Offsetof(Record{}.Hdr.Kind))
	offSize    = int(unsafe.Offsetof(Record{}.Hdr.Size))
	offArm     = int(unsafe.Offsetof(Record{}.Hdr.Arm))
	offMode    = int(unsafe.Offsetof(Record{}.Hdr.Mode))
	offGen     = int(unsafe.Offsetof(Record{}.Hdr.Generation))
	offDaddr   = int(unsafe.Offsetof(Record{}.Daddr))
	offDur     = int(unsafe.Offsetof(Record{}.DurationNs))
	offAcked   = int(unsafe.Offsetof(Record{}.BytesAcked))
	offRecv    = int(unsafe.Offsetof(Record{}.BytesReceived))
	offMaxRate = int(unsafe.Offsetof(Record{}.MaxRateBps))
	offSrtt    = int(unsafe.Offsetof(Record{}.SrttUs))
	offRttMin  = int(unsafe.Offsetof(Record{}.RttMinUs))
	offRetrans = int(unsafe.Offsetof(Record{}.TotalRetrans))
	offSegsOut = int(unsafe.Offsetof(Record{}.DataSegsOut))
	offMss     = int(unsafe.Offsetof(Record{}.Mss))
	offDport   = int(unsafe.Offsetof(Record{}.Dport))
	offFamily  = int(unsafe.Offsetof(Record{}.Family))
	offFlags   = int(unsafe.Offsetof(Record{}.Flags))
	offCC      = int(unsafe.Offsetof(Record{}.Cc))
	offRec     = int(unsafe.Offsetof(Record{}.Recommended))
)

// DecodeConn decodes one ring buffer record, refusing anything that is
// not a tcp_conn_record of the right size. It allocates nothing once the
// algorithms' names have been seen.
func DecodeConn(b []byte, c *Conn) error {
	if len(b) < RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadRecord, len(b), RecordSize)
	}
	b = b[:RecordSize]
	le := binary.LittleEndian
	kind, size := le.Uint16(b[offKind:]), le.Uint16(b[offSize:])
	if kind != loader.RecordTCPConn || int(size) != RecordSize {
		return fmt.Errorf("%w: kind %d size %d, want kind %d size %d", ErrBadRecord,
			kind, size, loader.RecordTCPConn, RecordSize)
	}
	if arm := b[offArm]; int(arm) >= model.ArmCount {
		return fmt.Errorf("%w: arm %d out of range", ErrBadRecord, arm)
	}
	if f := b[offFamily]; f != 4 && f != 6 {
		return fmt.Errorf("%w: address family %d", ErrBadRecord, f)
	}
	flags := b[offFlags]
	*c = Conn{
		Arm:           model.Arm(b[offArm]),
		Mode:          model.Mode(b[offMode]),
		Generation:    le.Uint32(b[offGen:]),
		Peer:          netip.AddrFrom16([16]byte(b[offDaddr:])).Unmap(),
		Port:          le.Uint16(b[offDport:]),
		Passive:       flags&uint8(tcpccTcpConnFlagsTCP_CONN_PASSIVE) != 0,
		Duration:      time.Duration(le.Uint64(b[offDur:])),
		BytesAcked:    le.Uint64(b[offAcked:]),
		BytesReceived: le.Uint64(b[offRecv:]),
		MaxRate:       float64(le.Uint64(b[offMaxRate:])),
		RateSampled:   flags&uint8(tcpccTcpConnFlagsTCP_CONN_RATE) != 0,
		SRTT:          time.Duration(le.Uint32(b[offSrtt:])) * time.Microsecond,
		MinRTT:        time.Duration(le.Uint32(b[offRttMin:])) * time.Microsecond,
		Retrans:       le.Uint32(b[offRetrans:]),
		SegsOut:       le.Uint32(b[offSegsOut:]),
		MSS:           le.Uint32(b[offMss:]),
		CC:            names.of(b[offCC : offCC+16]),
		Recommended:   names.of(b[offRec : offRec+16]),
		SetFailed:     flags&uint8(tcpccTcpConnFlagsTCP_CONN_SET_FAILED) != 0,
	}
	return nil
}

// names interns the algorithm names records carry: a handful on any
// host, so decoding a record allocates no string.
var names = interner{m: map[string]string{}}

type interner struct {
	mu sync.RWMutex
	m  map[string]string
}

// of returns the NUL-terminated name in b.
func (in *interner) of(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return ""
	}
	in.mu.RLock()
	s, ok := in.m[string(b)]
	in.mu.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	in.mu.Lock()
	if len(in.m) < 256 { // bounded: a garbage record must not grow it
		in.m[s] = s
	}
	in.mu.Unlock()
	return s
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
