package ringbuf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's ring buffer ABI (include/uapi/linux/bpf.h,
// kernel/bpf/ringbuf.c). The map is mmapped in two parts:
//
//	offset 0:          one page, read-write: consumer_pos (unsigned long)
//	offset page size:  one page, read-only: producer_pos (unsigned long),
//	                   then the data area, size bytes, mapped twice in a
//	                   row so that a record wrapping around the end of the
//	                   ring is contiguous in memory
//
// Positions only grow; a position's offset in the data area is pos & (size-1).
// Every record starts with an 8-byte header: a 32-bit length word, whose two
// top bits are BPF_RINGBUF_BUSY_BIT (reserved, not yet committed) and
// BPF_RINGBUF_DISCARD_BIT (committed but to be skipped), and a 32-bit page
// offset private to the kernel. A record takes its length plus the header,
// rounded up to 8 bytes.
//
// Memory ordering, with the kernel producer:
//   - the producer advances producer_pos (release) when it reserves, then
//     commits by clearing the busy bit with an atomic exchange on the length
//     word, then reads consumer_pos to decide whether to wake readers up;
//   - the consumer loads producer_pos (acquire), loads each length word
//     atomically, which orders the reads of the record after the producer's
//     writes, and stores consumer_pos (release) only after it is done with
//     every record before it: from then on the producer may overwrite them.
//
// Go's sync/atomic operations are sequentially consistent, which is at least
// as strong as each of these.
const (
	hdrSize    = unix.BPF_RINGBUF_HDR_SZ
	busyBit    = unix.BPF_RINGBUF_BUSY_BIT
	discardBit = unix.BPF_RINGBUF_DISCARD_BIT
)

// ring is the mmapped ring buffer of one map.
type ring struct {
	consPage []byte // read-write: consumer_pos
	prodPage []byte // read-only: producer_pos, then the data area twice

	consPos *uintptr
	prodPos *uintptr
	data    unsafe.Pointer // first byte of the data area
	mask    uintptr        // size - 1
}

func mapRing(fd, size int) (*ring, error) {
	page := os.Getpagesize()
	cons, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmapping consumer page: %w", err)
	}
	prod, err := unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Munmap(cons)
		return nil, fmt.Errorf("mmapping producer page and data area: %w", err)
	}
	return &ring{
		consPage: cons,
		prodPage: prod,
		consPos:  (*uintptr)(unsafe.Pointer(&cons[0])),
		prodPos:  (*uintptr)(unsafe.Pointer(&prod[0])),
		data:     unsafe.Pointer(&prod[page]),
		mask:     uintptr(size - 1),
	}, nil
}

func (r *ring) unmap() error {
	if r.consPage == nil {
		return nil
	}
	err := errors.Join(unix.Munmap(r.prodPage), unix.Munmap(r.consPage))
	*r = ring{}
	return err
}

func (r *ring) size() int { return int(r.mask) + 1 }

// availableBytes is producer_pos - consumer_pos: committed, busy and
// discarded records alike.
func (r *ring) availableBytes() int {
	prod := atomic.LoadUintptr(r.prodPos)
	cons := atomic.LoadUintptr(r.consPos)
	return int(prod - cons)
}

// errBadRecord means a length word points past producer_pos: the ring is
// not what the kernel writes (a foreign writer of the consumer page, or a
// kernel ABI this package does not know).
var errBadRecord = fmt.Errorf("record past the producer position: %w", io.ErrUnexpectedEOF)

// lengthWord loads, atomically, the length word of the record at pos.
func (r *ring) lengthWord(pos uintptr) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Add(r.data, pos&r.mask)))
}

// sample is the data of the committed record at pos, of n bytes: a slice
// into the ring.
func (r *ring) sample(pos uintptr, n uint32) []byte {
	n &= lenMask
	return (*[lenMask + 1]byte)(unsafe.Add(r.data, pos&r.mask+hdrSize))[:n:n]
}

// step is the room a record of n bytes takes in the ring.
func step(n uint32) uintptr {
	return uintptr(hdrSize+n+7) &^ 7
}
