package ringbuf

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Batch iterates, in place, over the records of one batch: the records
// committed in the ring when Reader.NextBatch started it, up to a quarter
// of the ring. Next is small enough to be inlined, so reading a record
// costs no function call (go build -gcflags=-m says so; TestNextInlined).
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
	// stopWord is the length word of the record the batch ended at
	// early: still being written (busy) or running past the producer
	// position (Err); 0 if none.
	stopWord uint32
}

// lenMask keeps the length of a record's length word.
const lenMask = 1<<30 - 1

// maxStep is the most room a record takes in the ring, and maxBatch the
// most bytes a batch starts records in. A length word with the busy bit
// set reads as a record of at least 2³¹ bytes, more than maxBatch+maxStep:
// Next takes it for a record running past the batch's producer position.
const (
	maxStep  = (lenMask + hdrSize + 7) &^ 7
	maxBatch = 1 << 29
)

// Next returns the next record of the batch, or nil at its end. A record
// of length 0 is an empty, non-nil slice. It skips discarded records, and
// ends the batch at a record still being written or at one that runs
// past the producer position (Err).
func (b *Batch) Next() []byte {
	// Kept under the inliner's budget: no call, no panic path.
	for int(b.stop-b.cons) > 0 {
		p := unsafe.Add(b.data, b.cons&b.mask)
		lenWord := atomic.LoadUint32((*uint32)(p))
		// With the busy bit left in, a record still being written
		// seems to run past the producer position.
		adv := (uintptr(lenWord&^discardBit) + hdrSize + 7) &^ 7
		if adv > b.prod-b.cons {
			b.stopWord, b.stop = lenWord, b.cons
			return nil
		}
		b.cons += adv
		if lenWord&discardBit == 0 {
			return (*[lenMask + 1]byte)(unsafe.Add(p, hdrSize))[:lenWord:lenWord]
		}
	}
	return nil
}

// Err reports a ring the kernel did not write (a record running past the
// producer position), which ended the batch early.
func (b *Batch) Err() error {
	if b.stopWord != 0 && b.stopWord&busyBit == 0 {
		return fmt.Errorf("reading ring buffer: %w", errBadRecord)
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
		if r.start(b) {
			return nil
		}
		// The ring is empty, or the record at the consumer position is
		// still being written: its commit wakes us up.
		if err := r.wait(); err != nil {
			return err
		}
	}
}

// start hands back the records read so far and starts b over the records
// committed now, if the one at the consumer position is. It holds r.mu.
func (r *Reader) start(b *Batch) bool {
	r.release()
	prod := atomic.LoadUintptr(r.ring.prodPos)
	if prod == r.cons || r.ring.lengthWord(r.cons)&busyBit != 0 {
		return false
	}
	stop := r.cons + min(prod-r.cons, r.limit)
	*b = Batch{
		r:    r,
		data: r.ring.data,
		mask: r.ring.mask,
		cons: r.cons,
		stop: stop,
		// No record that starts before stop ends past stop+maxStep:
		// Next can tell a busy length word by its size alone.
		prod: min(prod, stop+maxStep),
	}
	return true
}

// batchNow is NextBatch without waiting: it ends the previous batch and
// starts b over the records committed now, reporting false, with b empty,
// when there is none. No system call: for a consumer that polls on its
// own clock (DatasetBuilder.Fill).
func (r *Reader) batchNow(b *Batch) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endBatch()
	*b = Batch{}
	if r.closed {
		return false, errClosedRead
	}
	if !r.start(b) {
		return false, nil
	}
	r.batch = b
	return true, nil
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
