// Package ringbuf reads BPF ring buffers (BPF_MAP_TYPE_RINGBUF) in
// batches, straight from the mmapped ring, and turns a model's record
// stream into dataset portions.
//
// # Reading
//
// A Reader maps the ring the way the kernel ABI lays it out: the consumer
// page read-write, the producer page and the data area read-only, the data
// area twice in a row so that a record wrapping around the end of the ring
// is contiguous. It keeps the contract of cilium/ebpf's ringbuf.Reader
// (NewReader, Read, ReadInto with one reused Record, SetDeadline returning
// os.ErrDeadlineExceeded, Flush, Close unblocking a pending read with
// os.ErrClosed, AvailableBytes, BufferSize), so it can replace it, and adds
// two batched reads that copy nothing:
//
//	// a callback per record; rec is valid until the callback returns
//	n, err := rd.ReadBatch(func(rec []byte) error { ...; return nil })
//
//	// an iterator whose Next is inlined: no call per record
//	var b ringbuf.Batch
//	for {
//		if err := rd.NextBatch(&b); err != nil {
//			return err
//		}
//		for rec := b.Next(); rec != nil; rec = b.Next() {
//			// rec is valid until the next read on rd
//		}
//	}
//
// A batch is what the producer had committed when it started, up to a
// quarter of the ring; the consumer position is stored once per batch,
// after its records are consumed. No read allocates per record.
//
// Memory ordering with the kernel producer: the producer position is
// loaded with an atomic (acquire) load, each record's length word with an
// atomic load (the kernel commits a record by clearing its busy bit with
// an atomic exchange), and the consumer position is published with an
// atomic (release) store after the records it covers are consumed.
// Before sleeping in epoll on the map fd, a reader publishes its position
// and then loads the producer position again: the kernel wakes readers up
// when it commits a record at the published consumer position, so either
// the producer sees the reader caught up and wakes it, or the reader sees
// the record. No wake-up is lost.
//
// # Losses
//
// BPF collectors count the reservations that fail because the ring is
// full in their "lost" per-CPU map (mlbpf_count_lost in
// bpf/include/mlbpf.h); LostCounter sums it over CPUs and reports the
// losses since the last call.
//
// # Datasets
//
// DatasetBuilder turns the record stream into model.Dataset portions of
// fixed-size records, each checked against its mlbpf_record_hdr (kind and
// size), in bounded memory: past its cap, records are dropped and counted
// and the portion is EXTRACTED_PARTIALLY, as when the kernel lost records;
// a record that does not decode makes it CORRUPTED, counted, not fatal; a
// portion the learner discards is OBSOLETE and its memory is reused.
//
//	b, _ := ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
//		Kind: loader.RecordSynthetic, RecordSize: recordSize, MaxBytes: 1 << 20,
//	})
//	for {
//		if _, err := b.ReadFrom(rd, lost); err != nil { ... }
//		if b.Len() >= enough {
//			ds, _ := b.Take() // hand ds to the learner, then b.Discard(ds)
//		}
//	}
//
// Fill, which the period loop (package pipeline) uses, copies the records
// committed now straight from the ring into the portion, up to its
// capacity, never waiting and making no system call (but the lost map's
// lookup, when given a LostCounter): records past the capacity stay in the
// ring for the next portion.
package ringbuf
