package ringbuf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
)

// ErrFlushed is returned by a read after Flush, once the records that were
// in the ring buffer have been read.
var ErrFlushed = errors.New("ring buffer flushed")

// ErrClosed is returned by a read on a closed Reader, and by a read that
// Close interrupted. It is os.ErrClosed.
var ErrClosed = os.ErrClosed

// Record is one record copied out of the ring buffer by Read or ReadInto.
type Record struct {
	// RawSample is the record's data, without the kernel's 8-byte header.
	RawSample []byte
	// Remaining is the number of bytes, at least, still to read in the
	// ring buffer after this record.
	Remaining int
}

// Reader reads a BPF_MAP_TYPE_RINGBUF map from user space, straight from
// the mmapped ring.
//
// Reads (Read, ReadInto, ReadBatch) are serialised; Close, Flush,
// SetDeadline, AvailableBytes and Size may be called from any goroutine at
// any time. Only one Reader, in one process, may consume a map at a time:
// the consumer position lives in the map.
type Reader struct {
	size   int
	poller *poller
	limit  uintptr // most bytes one ReadBatch consumes

	deadline atomic.Int64 // UnixNano; 0: none

	// mapMu guards the mappings against Close while AvailableBytes reads
	// them; reads hold mu, which Close takes before mapMu.
	mapMu sync.RWMutex

	mu         sync.Mutex
	closed     bool
	ring       *ring // nil once unmapped
	cons       uintptr
	released   uintptr // consumer_pos as last stored
	prod       uintptr // producer_pos as last loaded by ReadInto
	batch      *Batch  // the batch NextBatch started, until it ends
	pendingErr error   // deadline or flush seen while records were left
	cleanup    runtime.Cleanup
}

var errClosedRead = fmt.Errorf("reading ring buffer: %w", os.ErrClosed)

// releaseShift sets how much a ReadInto caller may hold back from the
// producer: records already copied out are released at the latest once
// they add up to size>>releaseShift bytes, and in any case when the reader
// has caught up with the producer.
const releaseShift = 4

// NewReader returns a Reader of the ring buffer m. m must stay open while
// the Reader is in use.
func NewReader(m *ebpf.Map) (*Reader, error) {
	if m == nil {
		return nil, fmt.Errorf("creating ring buffer reader: nil map")
	}
	if m.Type() != ebpf.RingBuf {
		return nil, fmt.Errorf("creating ring buffer reader: map is a %s, want a ring buffer (BPF_MAP_TYPE_RINGBUF)", m.Type())
	}
	size := int(m.MaxEntries())
	if size <= 0 || size&(size-1) != 0 || size%os.Getpagesize() != 0 {
		return nil, fmt.Errorf("creating ring buffer reader: size %d is not a power of two multiple of the page size", size)
	}
	fd := m.FD()
	p, err := newPoller(fd)
	if err != nil {
		return nil, fmt.Errorf("creating ring buffer reader: %w", err)
	}
	ring, err := mapRing(fd, size)
	if err != nil {
		_ = p.close()
		return nil, fmt.Errorf("creating ring buffer reader: %w", err)
	}
	cons := atomic.LoadUintptr(ring.consPos)
	r := &Reader{
		size:     size,
		poller:   p,
		limit:    uintptr(min(size/4, maxBatch)),
		ring:     ring,
		cons:     cons,
		released: cons,
		prod:     cons,
	}
	r.cleanup = runtime.AddCleanup(r, func(res resources) {
		_ = res.ring.unmap()
		_ = res.poller.close()
	}, resources{ring, p})
	return r, nil
}

type resources struct {
	ring   *ring
	poller *poller
}

// Close releases the Reader's mappings and file descriptors. A pending
// read returns os.ErrClosed, as do later ones. Closing twice is harmless.
//
// If a Batch is open, the ring stays mapped, so that its records stay
// readable, until the next read on the Reader or until the Reader and the
// Batch are garbage.
func (r *Reader) Close() error {
	if r.poller.closed.Swap(true) {
		return nil
	}
	if err := r.poller.interrupt(); err != nil {
		return err
	}
	r.mu.Lock() // a pending read has returned
	defer r.mu.Unlock()
	r.closed = true
	var err error
	if r.batch == nil {
		err = r.unmap()
	}
	return errors.Join(err, r.poller.close())
}

// unmap releases the ring's mappings. It holds r.mu.
func (r *Reader) unmap() error {
	r.mapMu.Lock()
	defer r.mapMu.Unlock()
	if r.ring == nil {
		return nil
	}
	r.cleanup.Stop()
	err := r.ring.unmap()
	r.ring = nil
	return err
}

// SetDeadline sets when pending and later reads stop waiting for records
// and return os.ErrDeadlineExceeded, once every record already in the ring
// has been read. The zero time removes the deadline.
func (r *Reader) SetDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
		if ns == 0 {
			ns = 1
		}
	}
	r.deadline.Store(ns)
	if !r.poller.closed.Load() {
		_ = r.poller.interrupt() // a pending wait re-reads the deadline
	}
}

func (r *Reader) loadDeadline() time.Time {
	ns := r.deadline.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Flush makes a pending read return what the ring holds, or, if the ring
// is empty, ErrFlushed; without a pending read, the next read that finds
// the ring empty returns ErrFlushed. Useful when producers submit with
// BPF_RB_NO_WAKEUP.
func (r *Reader) Flush() error {
	if r.poller.closed.Load() {
		return fmt.Errorf("flushing ring buffer: %w", os.ErrClosed)
	}
	r.poller.flushed.Store(true)
	return r.poller.interrupt()
}

// Size is the size of the ring buffer's data area in bytes.
func (r *Reader) Size() int { return r.size }

// BufferSize is Size, under the name cilium/ebpf's reader uses.
func (r *Reader) BufferSize() int { return r.size }

// AvailableBytes is the number of bytes between the consumer and the
// producer positions, as the kernel sees them: records not yet read (or
// read by ReadInto and not yet handed back, at most Size/16 bytes), and
// records still being written. 0 after Close.
func (r *Reader) AvailableBytes() int {
	r.mapMu.RLock()
	defer r.mapMu.RUnlock()
	if r.ring == nil || r.poller.closed.Load() {
		return 0
	}
	return r.ring.availableBytes()
}

// Read is ReadInto with a new Record.
func (r *Reader) Read() (Record, error) {
	var rec Record
	err := r.ReadInto(&rec)
	return rec, err
}

// ReadInto copies the next record into rec, reusing rec.RawSample when it
// is large enough, and waits for one if the ring is empty.
//
// It returns os.ErrClosed if the Reader is or gets closed,
// os.ErrDeadlineExceeded once the deadline has passed and the ring is
// empty, and ErrFlushed after Flush once the ring is empty.
//
// Records copied out are handed back to the producer in groups (when they
// add up to Size/16 bytes, and whenever the reader catches up with the
// producer), not one at a time.
func (r *Reader) ReadInto(rec *Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endBatch()
	for {
		if r.closed {
			return errClosedRead
		}
		if r.cons == r.prod {
			r.release()
			r.prod = atomic.LoadUintptr(r.ring.prodPos)
		}
		if r.cons != r.prod {
			lenWord := r.ring.lengthWord(r.cons)
			if lenWord&busyBit == 0 {
				size := lenWord &^ (busyBit | discardBit)
				adv := step(size)
				if adv > r.prod-r.cons {
					return fmt.Errorf("reading ring buffer: %w", errBadRecord)
				}
				pos := r.cons
				r.cons += adv
				if lenWord&discardBit != 0 {
					continue
				}
				if cap(rec.RawSample) < int(size) {
					rec.RawSample = make([]byte, size)
				}
				rec.RawSample = rec.RawSample[:size]
				copy(rec.RawSample, r.ring.sample(pos, size))
				rec.Remaining = int(r.prod - r.cons)
				if r.cons == r.prod || r.cons-r.released >= uintptr(r.size>>releaseShift) {
					r.release()
				}
				return nil
			}
			// The next record is still being written: hand back what
			// was read, then wait. The commit wakes us up, because the
			// record then sits at the consumer position.
			r.release()
		}
		if err := r.wait(); err != nil {
			return err
		}
	}
}

// ReadBatch waits until the ring holds at least one committed record,
// then calls fn with each committed record, in the order they were
// reserved, without copying: rec points into the ring and is valid only
// until fn returns. It stops at the producer position it loaded first, at
// a record still being written, after a quarter of the ring, or when fn
// returns an error, and only then hands the records back to the producer,
// with one store of the consumer position. The record for which fn
// returned an error counts as read. It returns the number of records
// passed to fn.
//
// Errors are those of ReadInto, and fn's own. NextBatch does the same
// without a function call per record.
func (r *Reader) ReadBatch(fn func(rec []byte) error) (n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endBatch()
	var b Batch
	for {
		if err := r.begin(&b); err != nil {
			return 0, err
		}
		for rec := b.Next(); rec != nil; rec = b.Next() {
			n++
			if err = fn(rec); err != nil {
				break
			}
		}
		r.cons, r.prod = b.cons, b.cons
		r.release()
		if err == nil {
			err = b.Err()
		}
		if n > 0 || err != nil {
			return n, err
		}
		// Only discarded records, or the batch stopped at a record
		// being written: begin waits if it must.
	}
}

// release stores the consumer position, handing back to the producer
// every record read so far.
func (r *Reader) release() {
	if r.cons != r.released {
		atomic.StoreUintptr(r.ring.consPos, r.cons)
		r.released = r.cons
	}
}

// wait blocks until the ring may hold records, or returns why not. A
// deadline or flush seen while the ring may still hold records is kept for
// the read that finds the ring empty.
func (r *Reader) wait() error {
	if err := r.pendingErr; err != nil {
		r.pendingErr = nil
		return err
	}
	err := r.poller.wait(r.loadDeadline)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ErrFlushed):
		// Records committed with BPF_RB_NO_WAKEUP may be waiting
		// without a wake-up: return them first.
		r.pendingErr = err
		return nil
	case errors.Is(err, os.ErrClosed):
		return fmt.Errorf("reading ring buffer: %w", err)
	default:
		return err
	}
}
