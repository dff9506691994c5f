//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ringbuf_bench.bpf.c - the producer behind ringbuf/'s tests and the
 * ring buffer benchmark (cmd/ringbench).
 *
 * Two programs share the maps every model object declares
 * (MLBPF_MODEL_MAPS): "events" is the ring buffer under test, "lost" counts
 * the reservations that failed because the ring was full.
 *
 * ringbench_produce is the benchmark's producer: attached to the
 * sys_enter_getppid tracepoint, it emits samples_per_trigger records of
 * sample_size bytes each time a thread of target_tgid calls getppid(2). A
 * record is a sequence number followed by padding.
 *
 * ringbench_emit is the tests' producer, run with BPF_PROG_TEST_RUN: its
 * context (struct ringbench_emit_args) says how many records to emit, of
 * what size, header and flags. Every record starts with struct
 * mlbpf_record_hdr, followed by its sequence number; records of 40 bytes
 * or more repeat the sequence number in their last aligned 8 bytes, so a
 * reader that gets a record wrapping around the end of the ring wrong is
 * caught.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mlbpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Largest record ringbench_emit writes. */
#define RINGBENCH_MAX_RECORD 4096

/* The first bytes of a benchmark record. */
struct ringbench_sample {
	__u64 seq;
};

MLBPF_MODEL_MAPS(struct ringbench_sample, 1 << 22);

/* Only getppid(2) calls of this thread group produce records. */
const volatile __u32 target_tgid = 0;
/* Bytes per benchmark record, at least 8. Read-only so that the verifier
 * sees a constant reservation size. */
const volatile __u32 sample_size = 64;
/* Records per getppid(2) call; user space changes it between runs. */
__u32 samples_per_trigger = 1;
/* Sequence number of the next benchmark record. */
__u64 next_seq = 0;

static long produce_one(__u64 i, void *ctx)
{
	__u64 *seq = ctx;
	struct ringbench_sample *s;

	s = bpf_ringbuf_reserve(&events, sample_size, 0);
	if (!s) {
		mlbpf_count_lost(&lost);
		return 0;
	}
	s->seq = *seq;
	*seq += 1;
	bpf_ringbuf_submit(s, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int ringbench_produce(void *ctx)
{
	__u32 n = samples_per_trigger;
	__u64 seq;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;

	seq = next_seq;
	if (n == 1)
		produce_one(0, &seq);
	else
		bpf_loop(n, produce_one, &seq, 0);
	next_seq = seq;
	return 0;
}

/*
 * ringbench_baseline does what ringbench_produce does before it produces:
 * the tgid check. Attached to the same tracepoint, its run_time_ns/run_cnt
 * is the cost of the hook and of the stats themselves, which the
 * benchmark subtracts to report the producer's own cost.
 */
SEC("tracepoint/syscalls/sys_enter_getppid")
int ringbench_baseline(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	return 0;
}

/*
 * struct ringbench_emit_args - the context of one ringbench_emit run.
 *
 * @count:         records to emit
 * @size:          bytes per record, 32 to RINGBENCH_MAX_RECORD
 * @first_seq:     sequence number of the first record; the others follow
 * @kind:          mlbpf_record_hdr.kind of every record
 * @hdr_size:      mlbpf_record_hdr.size of every record (0: @size); a
 *                 value other than @size makes a corrupted record
 * @flags:         flags of bpf_ringbuf_output/submit/discard
 *                 (BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP)
 * @discard_every: when not 0, records whose seq % discard_every is
 *                 discard_every - 1 are reserved (32 bytes) and discarded
 */
struct ringbench_emit_args {
	__u64 count;
	__u64 size;
	__u64 first_seq;
	__u64 kind;
	__u64 hdr_size;
	__u64 flags;
	__u64 discard_every;
};

/* The first bytes of a test record. */
struct ringbench_test_record {
	struct mlbpf_record_hdr hdr;
	__u64 seq;
};

/* Not used: makes bpf2go generate the Go type of a test record. */
struct ringbench_test_record *unused_test_record __attribute__((unused));

/* Where a test record is assembled before bpf_ringbuf_output copies it. */
struct ringbench_scratch {
	__u8 bytes[RINGBENCH_MAX_RECORD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ringbench_scratch);
} scratch SEC(".maps");

struct emit_state {
	struct ringbench_emit_args args;
	struct ringbench_scratch *buf;
};

static long emit_one(__u64 i, void *ctx)
{
	struct emit_state *st = ctx;
	struct ringbench_test_record *r;
	__u64 seq = st->args.first_seq + i;
	__u64 size = st->args.size;
	__u64 every = st->args.discard_every;
	__u64 flags = st->args.flags;
	__u64 tail;

	if (every && seq % every == every - 1) {
		r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
		if (!r) {
			mlbpf_count_lost(&lost);
			return 0;
		}
		r->seq = seq;
		bpf_ringbuf_discard(r, flags);
		return 0;
	}

	if (size < sizeof(*r) || size > RINGBENCH_MAX_RECORD)
		return 1;
	r = (void *)st->buf->bytes;
	mlbpf_fill_hdr(&r->hdr, st->args.kind,
		       st->args.hdr_size ? st->args.hdr_size : size,
		       MLBPF_ARM_FALLBACK, NULL);
	r->seq = seq;
	tail = (size - sizeof(__u64)) & (RINGBENCH_MAX_RECORD - sizeof(__u64));
	if (tail >= sizeof(*r))
		*(__u64 *)&st->buf->bytes[tail] = seq;

	if (bpf_ringbuf_output(&events, st->buf, size, flags))
		mlbpf_count_lost(&lost);
	return 0;
}

SEC("raw_tp")
int ringbench_emit(struct ringbench_emit_args *args)
{
	struct emit_state st = {};
	__u32 zero = 0;

	st.buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!st.buf)
		return -1;
	st.args = *args;
	if (st.args.size < sizeof(struct ringbench_test_record) ||
	    st.args.size > RINGBENCH_MAX_RECORD)
		return -1;
	return bpf_loop(st.args.count, emit_one, &st, 0);
}
