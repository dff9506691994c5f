/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mlbpf.h - the one header shared by the BPF programs and the Go side.
 *
 * Everything a BPF collector or applier and the Go loader must agree on
 * lives here: the per-model control block, the enums of the ml-lib RFC
 * (modes, model states), the arms an applier can take, and the header
 * every ring buffer record starts with. Go types are generated from this
 * file by bpf2go (package loader, see loader/abi.go); nothing is mirrored
 * by hand.
 *
 * Include it after vmlinux.h and bpf/bpf_helpers.h.
 */
#ifndef __MLBPF_H
#define __MLBPF_H

/* enum ml_lib_system_mode, same values as the RFC. */
enum mlbpf_mode {
	MLBPF_MODE_UNKNOWN = 0,
	MLBPF_MODE_EMERGENCY = 1,
	MLBPF_MODE_LEARNING = 2,
	MLBPF_MODE_COLLABORATION = 3,
	MLBPF_MODE_RECOMMENDATION = 4,
	MLBPF_MODE_MAX,
};

/* The RFC's model states, same values. Appliers act only in RUNNING. */
enum mlbpf_model_state {
	MLBPF_MODEL_UNKNOWN = 0,
	MLBPF_MODEL_CREATED = 1,
	MLBPF_MODEL_INITIALIZED = 2,
	MLBPF_MODEL_STARTED = 3,
	MLBPF_MODEL_RUNNING = 4,
	MLBPF_MODEL_STOPPED = 5,
	MLBPF_MODEL_SHUTTING_DOWN = 6,
	MLBPF_MODEL_STATE_MAX,
};

/*
 * The arm an applier took for one invocation. Counted per CPU in the
 * model's stats map and written into every outcome record, so that user
 * space can compare what the model did against what the default did.
 */
enum mlbpf_arm {
	/* Default behaviour because the model may not act: not RUNNING,
	 * EMERGENCY, lease expired, or an unknown mode in the control block. */
	MLBPF_ARM_FALLBACK = 0,
	/* The model may act but has no recommendation for this key. */
	MLBPF_ARM_NO_REC = 1,
	/* LEARNING: a recommendation exists and was looked up, not applied. */
	MLBPF_ARM_SHADOW = 2,
	/* COLLABORATION or RECOMMENDATION: drawn at random to stay on the
	 * default (the control group, or the holdout). */
	MLBPF_ARM_CONTROL = 3,
	/* The recommendation was applied. */
	MLBPF_ARM_MODEL = 4,
	/* The recommendation failed the applier's own checks (out of range,
	 * unknown value, refused by the kernel): default behaviour. */
	MLBPF_ARM_REJECTED = 5,
	/* The subject had already been configured by someone else (an
	 * application's own choice): left alone. */
	MLBPF_ARM_SKIPPED = 6,
	MLBPF_ARM_MAX,
};

/*
 * struct mlbpf_snapshot - one version of a control block: everything a
 * decision depends on.
 *
 * @mode:             enum mlbpf_mode
 * @state:            enum mlbpf_model_state
 * @lease_expires_ns: CLOCK_MONOTONIC (bpf_ktime_get_ns) after which the
 *                    appliers fall back to the default; renewed by the
 *                    daemon, so a dead daemon means the default within one
 *                    lease
 * @collab_permille:  COLLABORATION: share of invocations that apply the
 *                    recommendation (the rest are the control group)
 * @holdout_permille: RECOMMENDATION: share kept on the default
 * @generation:       bumped by user space at every change, copied into
 *                    records so outcomes can be matched to the decision
 */
struct mlbpf_snapshot {
	__u32 mode;
	__u32 state;
	__u64 lease_expires_ns;
	__u32 collab_permille;
	__u32 holdout_permille;
	__u32 generation;
};

/*
 * struct mlbpf_control - the per-model control block.
 *
 * One entry in the model's pinned array map "control" (BPF_F_MMAPABLE).
 * Written by user space only (the daemon, the CLI, one at a time under the
 * pin directory's lock), read by the appliers at every invocation.
 *
 * A decision and its record must come from one version of the block, so
 * the block is a seqcount latch of two copies: the fields up to
 * generation (same layout as struct mlbpf_snapshot; bpftool shows them by
 * name, and between writes they are the block) and @spare. A writer, in
 * the mmapped value,
 *   1. makes @seq odd: readers now copy @spare,
 *   2. writes the fields,
 *   3. makes @seq even: readers now copy the fields,
 *   4. writes @spare.
 * A reader (mlbpf_snapshot_take) reads @seq, copies the copy @seq names,
 * and keeps it if @seq did not change meanwhile. A reader never waits for
 * a writer, even one preempted between two steps, and never sees a copy
 * being written.
 *
 * @seq:   the latch's sequence count
 * @spare: the second copy
 */
struct mlbpf_control {
	__u32 mode;
	__u32 state;
	__u64 lease_expires_ns;
	__u32 collab_permille;
	__u32 holdout_permille;
	__u32 generation;
	__u32 seq;
	struct mlbpf_snapshot spare;
};

/* Record kinds, the first field user space dispatches on. */
enum mlbpf_record_kind {
	MLBPF_REC_UNKNOWN = 0,
	MLBPF_REC_SYNTHETIC = 1,
	MLBPF_REC_TCP_CONN = 2,
	MLBPF_REC_BENCH = 3,
	MLBPF_REC_KIND_MAX,
};

/*
 * struct mlbpf_record_hdr - first bytes of every ring buffer record.
 *
 * @ts_ns:      bpf_ktime_get_ns() when the record was produced
 * @kind:       enum mlbpf_record_kind
 * @size:       size of the whole record in bytes, header included
 * @arm:        enum mlbpf_arm taken by the decision this record is about
 * @mode:       enum mlbpf_mode in effect at the decision
 * @generation: control block generation at the decision
 * @cpu:        CPU that produced the record
 */
struct mlbpf_record_hdr {
	__u64 ts_ns;
	__u16 kind;
	__u16 size;
	__u8 arm;
	__u8 mode;
	__u16 reserved;
	__u32 generation;
	__u32 cpu;
};

#define MLBPF_PERMILLE 1000

#ifdef __BPF__

/*
 * Maps every model object declares, with these names, and pins. The ring
 * buffer's value type names the record so bpf2go generates its Go type.
 */
#define MLBPF_MODEL_MAPS(record_type, ringbuf_bytes)                                    \
	struct {                                                             \
		__uint(type, BPF_MAP_TYPE_ARRAY);                            \
		__uint(max_entries, 1);                                      \
		__uint(map_flags, BPF_F_MMAPABLE);                           \
		__type(key, __u32);                                          \
		__type(value, struct mlbpf_control);                         \
	} control SEC(".maps");                                              \
	struct {                                                             \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                     \
		__uint(max_entries, MLBPF_ARM_MAX);                          \
		__type(key, __u32);                                          \
		__type(value, __u64);                                        \
	} stats SEC(".maps");                                                \
	struct {                                                             \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                     \
		__uint(max_entries, 1);                                      \
		__type(key, __u32);                                          \
		__type(value, __u64);                                        \
	} lost SEC(".maps");                                                 \
	struct {                                                             \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                          \
		__uint(max_entries, ringbuf_bytes);                          \
		__type(value, record_type);                                  \
	} events SEC(".maps")

static __always_inline void mlbpf_count(void *stats_map, __u32 arm)
{
	__u64 *n = bpf_map_lookup_elem(stats_map, &arm);

	if (n)
		*n += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline void mlbpf_count_lost(void *lost_map)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(lost_map, &zero);

	if (n)
		*n += 1;
}

/* True with probability permille/1000. */
static __always_inline bool mlbpf_draw(__u32 permille)
{
	if (permille >= MLBPF_PERMILLE)
		return true;
	return bpf_get_prandom_u32() % MLBPF_PERMILLE < permille;
}

/* Attempts at a consistent copy before mlbpf_snapshot_take gives up. A
 * retry needs a write to land within the few loads of the previous
 * attempt. */
#define MLBPF_SNAPSHOT_TRIES 4

/*
 * Order the loads before it before the loads after it. The BPF JITs emit
 * plain loads in program order; x86-64 and s390 keep loads in order
 * (TSO), so a compiler barrier is enough there. (A weakly ordered CPU,
 * arm64, would need load-acquire, BPF_LOAD_ACQ: kernel 6.15, clang 20.)
 */
#define mlbpf_rmb() asm volatile("" ::: "memory")

/*
 * mlbpf_snapshot_take - copy one version of a control block into @s.
 *
 * Returns false, with @s zeroed (mode and state UNKNOWN, generation 0:
 * the default), when @c is NULL or no attempt found the block unchanged.
 */
static __always_inline bool mlbpf_snapshot_take(const struct mlbpf_control *c,
						struct mlbpf_snapshot *s)
{
	const volatile struct mlbpf_snapshot *src;
	__u32 seq, i;

	if (!c)
		goto none;
	for (i = 0; i < MLBPF_SNAPSHOT_TRIES; i++) {
		seq = *(const volatile __u32 *)&c->seq;
		mlbpf_rmb();
		src = (seq & 1) ? (const volatile struct mlbpf_snapshot *)&c->spare :
				  (const volatile struct mlbpf_snapshot *)c;
		s->mode = src->mode;
		s->state = src->state;
		s->lease_expires_ns = src->lease_expires_ns;
		s->collab_permille = src->collab_permille;
		s->holdout_permille = src->holdout_permille;
		s->generation = src->generation;
		mlbpf_rmb();
		if (*(const volatile __u32 *)&c->seq == seq)
			return true;
	}
none:
	__builtin_memset(s, 0, sizeof(*s));
	return false;
}

/*
 * mlbpf_may_act - may the model act under @s at all: RUNNING, a live
 * lease, and a mode that is not EMERGENCY (or garbage)?
 */
static __always_inline bool mlbpf_may_act(const struct mlbpf_snapshot *s)
{
	return s->state == MLBPF_MODEL_RUNNING &&
	       bpf_ktime_get_ns() <= s->lease_expires_ns &&
	       s->mode >= MLBPF_MODE_LEARNING && s->mode < MLBPF_MODE_MAX;
}

/*
 * mlbpf_decide - the mode state machine, enforced at the hook.
 *
 * @s:        one version of the model's control block
 *            (mlbpf_snapshot_take); the record of this decision must be
 *            filled from the same @s
 * @have_rec: a valid recommendation exists for this invocation's key
 *
 * Returns the arm to take. Only MLBPF_ARM_MODEL applies the
 * recommendation; every other arm keeps the kernel's default behaviour.
 */
static __always_inline enum mlbpf_arm
mlbpf_decide(const struct mlbpf_snapshot *s, bool have_rec)
{
	if (!mlbpf_may_act(s))
		return MLBPF_ARM_FALLBACK;

	switch (s->mode) {
	case MLBPF_MODE_LEARNING:
		return have_rec ? MLBPF_ARM_SHADOW : MLBPF_ARM_NO_REC;
	case MLBPF_MODE_COLLABORATION:
		if (!have_rec)
			return MLBPF_ARM_NO_REC;
		return mlbpf_draw(s->collab_permille) ? MLBPF_ARM_MODEL :
							MLBPF_ARM_CONTROL;
	case MLBPF_MODE_RECOMMENDATION:
		if (!have_rec)
			return MLBPF_ARM_NO_REC;
		return mlbpf_draw(s->holdout_permille) ? MLBPF_ARM_CONTROL :
							 MLBPF_ARM_MODEL;
	default:
		/* Unreachable: mlbpf_may_act refused any other mode. */
		return MLBPF_ARM_FALLBACK;
	}
}

static __always_inline void mlbpf_fill_hdr(struct mlbpf_record_hdr *h,
					   __u16 kind, __u16 size, __u32 arm,
					   const struct mlbpf_snapshot *s)
{
	h->ts_ns = bpf_ktime_get_ns();
	h->kind = kind;
	h->size = size;
	h->arm = arm;
	h->mode = s ? s->mode : MLBPF_MODE_UNKNOWN;
	h->reserved = 0;
	h->generation = s ? s->generation : 0;
	h->cpu = bpf_get_smp_processor_id();
}

/*
 * Balanced randomisation of COLLABORATION (mlbpf_decide_blocked).
 *
 * Independent coin flips leave the two arms of a small split unequal: a
 * 50/50 split needs 8 to 13 decisions, not 8, before each arm has 4.
 * Permuted blocks (a clinical trial's "block randomisation") keep them
 * equal: the decisions are taken in blocks of n, of which exactly
 * n·permille/1000 apply the model, in a random order (each decision
 * draws MODEL with probability models left / decisions left in its
 * block). Every decision is still random, and the arms never differ by
 * more than a block.
 *
 * struct mlbpf_block - the block being drawn from.
 *
 * @generation: of the control block it was begun under; a new
 *              generation (a mode change) begins a new block
 * @permille:   the share it was begun for
 * @left:       decisions left in it
 * @model_left: of which MODEL
 *
 * Shared by the CPUs without a lock: two decisions at the same instant
 * may draw from the same state, which unbalances the block by one (and
 * leaves every draw random); an inconsistent state begins a new block.
 */
struct mlbpf_block {
	__u32 generation;
	__u32 permille;
	__u32 left;
	__u32 model_left;
};

/* The largest block: a share with no whole block up to it (333 ‰) is
 * drawn by coin flips. */
#define MLBPF_BLOCK_MAX 20

/* The smallest block in which @permille of the decisions is a whole
 * number, 0 if none up to MLBPF_BLOCK_MAX. */
static __always_inline __u32 mlbpf_block_size(__u32 permille)
{
	for (__u32 n = 2; n <= MLBPF_BLOCK_MAX; n++)
		if (permille * n % MLBPF_PERMILLE == 0)
			return n;
	return 0;
}

/* True (MODEL) for @permille of the decisions, in permuted blocks. */
static __always_inline bool mlbpf_draw_block(struct mlbpf_block *b, __u32 generation, __u32 permille)
{
	__u32 n, left, model_left;
	bool model;

	if (!b || permille == 0 || permille >= MLBPF_PERMILLE)
		return mlbpf_draw(permille);
	n = mlbpf_block_size(permille);
	if (!n)
		return mlbpf_draw(permille);
	left = b->left;
	model_left = b->model_left;
	if (b->generation != generation || b->permille != permille || left == 0 || left > n ||
	    model_left > left) {
		left = n;
		model_left = permille * n / MLBPF_PERMILLE;
	}
	model = bpf_get_prandom_u32() % left < model_left;
	b->generation = generation;
	b->permille = permille;
	b->left = left - 1;
	b->model_left = model_left - model;
	return model;
}

/*
 * mlbpf_decide_blocked - mlbpf_decide, with COLLABORATION's split drawn
 * in permuted blocks from @b (coin flips if @b is NULL).
 */
static __always_inline enum mlbpf_arm
mlbpf_decide_blocked(const struct mlbpf_snapshot *s, bool have_rec, struct mlbpf_block *b)
{
	if (mlbpf_may_act(s) && s->mode == MLBPF_MODE_COLLABORATION && have_rec)
		return mlbpf_draw_block(b, s->generation, s->collab_permille) ? MLBPF_ARM_MODEL :
										 MLBPF_ARM_CONTROL;
	return mlbpf_decide(s, have_rec);
}

#endif /* __BPF__ */

#endif /* __MLBPF_H */
