//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The synthetic subsystem: mlbpf's counterpart of the ml-lib RFC's test
 * device. A request carries a key; the subsystem's default algorithm
 * answers key % SYNTH_DEFAULT_MOD; a model may recommend another value per
 * key. The applier decides per invocation following the model's mode
 * (mlbpf_decide) and emits one outcome record per decision.
 *
 * The program is a raw tracepoint so it can run on two kinds of input with
 * the same code: BPF_PROG_TEST_RUN with args {0, key} (tests, fully
 * deterministic), or attached to raw_syscalls:sys_enter, where args[1] is
 * the syscall number (the daemon's live demonstration).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mlbpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SYNTH_DEFAULT_MOD 64


/* A recommendation for one key. */
struct synth_recommendation {
	__u32 value;
	__u32 generation;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct synth_recommendation);
} recommend SEC(".maps");

/* One decision, as the learner sees it. */
struct synth_record {
	struct mlbpf_record_hdr hdr;
	__u32 key;
	__u32 default_value;
	__u32 recommended;
	__u32 applied;
};

MLBPF_MODEL_MAPS(struct synth_record, 1 << 20);

/* Largest value the applier accepts; anything above is REJECTED. */
const volatile __u32 max_value = 1 << 20;
/* Only this thread group's requests are handled (0: all). */
const volatile __u32 filter_tgid = 0;
/* This thread group's requests are ignored: the daemon itself, whose own
 * syscalls would otherwise feed the ring it drains (0: none). */
const volatile __u32 exclude_tgid = 0;

SEC("raw_tp")
int synth_apply(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, key, dflt, recommended = 0, applied;
	struct synth_recommendation *rec;
	struct mlbpf_snapshot snap;
	struct synth_record *r;
	enum mlbpf_arm arm;

	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if ((filter_tgid && tgid != filter_tgid) || (exclude_tgid && tgid == exclude_tgid))
		return 0;

	key = (__u32)ctx->args[1];
	dflt = key % SYNTH_DEFAULT_MOD;

	/* One version of the block for the decision and its record. */
	mlbpf_snapshot_take(bpf_map_lookup_elem(&control, &zero), &snap);
	rec = bpf_map_lookup_elem(&recommend, &key);
	if (rec)
		recommended = rec->value;

	arm = mlbpf_decide(&snap, rec != NULL);
	if (rec && recommended > max_value && arm != MLBPF_ARM_FALLBACK)
		arm = MLBPF_ARM_REJECTED;

	applied = arm == MLBPF_ARM_MODEL ? recommended : dflt;
	mlbpf_count(&stats, arm);

	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		mlbpf_count_lost(&lost);
		return applied;
	}
	mlbpf_fill_hdr(&r->hdr, MLBPF_REC_SYNTHETIC, sizeof(*r), arm, &snap);
	r->key = key;
	r->default_value = dflt;
	r->recommended = recommended;
	r->applied = applied;
	bpf_ringbuf_submit(r, 0);
	return applied;
}
