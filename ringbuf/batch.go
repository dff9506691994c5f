package ringbuf

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Batch iterates, in place, over the records of one batch: the records
// committed in the ring when Reader.NextBatch started it, up to a quarter
// of the ring. Next is small enough to be inlined, so reading a record
// costs no function call.
//
// The records Next returns point into the ring buffer. They stay valid
// until the batch ends: at the next read on the Reader (NextBatch,
// ReadBatch, ReadInto, Read) or at Release. Ending the batch hands the
// records Next returned back to the producer, with one store of the
// consumer position; the others are read again by the next read.
//
// A Batch is used by one goroutine at a time. Its zero value is an empty
// batch.
type Batch struct {
	r    *Reader
	data unsafe.Pointer
	mask uintptr
	cons uintptr // position of the next record
	stop uintptr // the batch ends at the first record at or past stop
	prod uintptr // producer position when the batch started
	busy bool    // the batch ended at a record still being written
	err  error
}

// lenMask keeps the length of a record's length word.
const lenMask = 1<<30 - 1

// Next returns the next record of the batch, or nil at its end. A record
// of length 0 is an empty, non-nil slice.
func (b *Batch) Next() []byte {
	if int(b.stop-b.cons) <= 0 {
		return nil
	}
	p := unsafe.Add(b.data, b.cons&b.mask)
	lenWord := atomic.LoadUint32((*uint32)(p))
	adv := step(lenWord & lenMask)
	if lenWord&(busyBit|discardBit) != 0 || adv > b.prod-b.cons {
		return b.next()
	}
	b.cons += adv
	n := lenWord & lenMask
	return (*[lenMask + 1]byte)(unsafe.Add(p, hdrSize))[:n:n]
}

// next is Next's slow path: discarded records, a record still being
// written, a record that overruns the producer position.
func (b *Batch) next() []byte {
	for int(b.stop-b.cons) > 0 {
		p := unsafe.Add(b.data, b.cons&b.mask)
		lenWord := atomic.LoadUint32((*uint32)(p))
		if lenWord&busyBit != 0 {
			b.busy = true
			b.stop = b.cons
			return nil
		}
		n := lenWord & lenMask
		adv := step(n)
		if adv > b.prod-b.cons {
			b.err = errBadRecord
			b.stop = b.cons
			return nil
		}
		b.cons += adv
		if lenWord&discardBit == 0 {
			return (*[lenMask + 1]byte)(unsafe.Add(p, hdrSize))[:n:n]
		}
	}
	return nil
}

// Err reports a ring the kernel did not write (a record running past the
// producer position), which ended the batch early.
func (b *Batch) Err() error {
	if b.err != nil {
		return fmt.Errorf("reading ring buffer: %w", b.err)
	}
	return nil
}

// Release ends the batch now, handing its records back to the producer,
// instead of at the next read.
func (b *Batch) Release() {
	if b.r == nil {
		return
	}
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	if b.r.batch == b {
		b.r.endBatch()
	}
}

// NextBatch ends the previous batch, if any, waits like ReadBatch until
// the ring holds a committed record, and starts b over the records
// committed so far:
//
//	var b ringbuf.Batch
//	for {
//		if err := rd.NextBatch(&b); err != nil {
//			return err
//		}
//		for rec := b.Next(); rec != nil; rec = b.Next() {
//			// use rec; it is valid until the next NextBatch
//		}
//	}
//
// Errors are those of ReadInto.
func (r *Reader) NextBatch(b *Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endBatch()
	if err := r.begin(b); err != nil {
		return err
	}
	r.batch = b
	return nil
}

// begin waits until the ring holds a committed or discarded record at the
// consumer position and starts b there. It holds r.mu.
func (r *Reader) begin(b *Batch) error {
	*b = Batch{}
	for {
		if r.closed {
			return errClosedRead
		}
		r.release()
		prod := atomic.LoadUintptr(r.ring.prodPos)
		if prod != r.cons {
			if r.ring.lengthWord(r.cons)&busyBit == 0 {
				*b = Batch{
					r:    r,
					data: r.ring.data,
					mask: r.ring.mask,
					cons: r.cons,
					stop: r.cons + min(prod-r.cons, r.limit),
					prod: prod,
				}
				return nil
			}
			// The record at the consumer position is still being
			// written: its commit wakes us up.
		}
		if err := r.wait(); err != nil {
			return err
		}
	}
}

// endBatch ends the open batch, if any, and hands the records its Next
// returned back to the producer. It holds r.mu.
func (r *Reader) endBatch() {
	b := r.batch
	if b == nil {
		return
	}
	r.batch = nil
	r.cons, r.prod = b.cons, b.cons
	b.stop = b.cons
	if r.closed {
		r.unmap() // Close left the ring mapped for this batch
		return
	}
	r.release()
}
