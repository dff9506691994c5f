//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp/rto: the loss-recovery timers of a TCP connection, chosen per
 * destination by a model.
 *
 * A sock_ops program attached to a cgroup v2, beside tcp/cc's if both run
 * (each its own program, maps, control block and lease). For every
 * connect()ed connection of the cgroup it
 *   - at TCP_CONNECT_CB (before the SYN is built) looks the peer up in the
 *     LPM trie "recommend", decides with mlbpf_decide() and, on the MODEL
 *     arm only, draws one of the value's candidate settings (one once the
 *     learner has chosen; several while it explores) and applies its
 *     TCP_BPF_RTO_MIN and TCP_BPF_DELACK_MAX;
 *   - at TIMEOUT_INIT (called right after, when the SYN's timer is armed)
 *     replies with the setting's SYN retransmission timeout;
 *   - at ACTIVE_ESTABLISHED_CB sets the initial congestion window
 *     (TCP_BPF_IW: the kernel has just initialised cwnd, to 1 after a
 *     retransmitted SYN) and notes the handshake's end and retransmits;
 *   - counts the retransmission timeouts (RTO_CB) and notes when the
 *     connection's data and FIN are acknowledged (FIN_WAIT2);
 *   - while a connection runs shortened timers, checks the control block
 *     at its RTT samples (RTT_CB) and, once the model may no longer act
 *     (EMERGENCY, lease expired, stopped), restores the socket's own
 *     timers: fallback reaches live connections, not only new ones;
 *   - at TCP_CLOSE emits one outcome record (struct tcp_rto_record) whose
 *     reward is the flow completion time: connect to the end of its data.
 *
 * A setting the kernel would refuse (RTO_MIN or DELACK_MAX outside
 * [TCP_TIMEOUT_MIN, 200 ms] after rounding up to jiffies, 5-200 ms at HZ=250)
 * is not tried: the connection keeps every default and is counted
 * MLBPF_ARM_REJECTED, as is one whose setsockopt the kernel refused anyway.
 *
 * Nothing is remembered, and no record written, while the model is not
 * RUNNING or its lease has expired.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "mlbpf.h"
#include "mlbpf_sockops.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SOL_TCP 6

extern unsigned int CONFIG_HZ __kconfig;

/* Record kind of tcp_rto_record (not in mlbpf.h's enum yet: the value is
 * outside it so no other record can take it). */
enum tcp_rto_record_kind {
	TCP_RTO_REC_KIND = 64,
};

/*
 * One setting of the grid. A zero field keeps the kernel's default for
 * that knob (1 s SYN timeout, 200 ms RTO floor, 200 ms delayed-ACK ceiling,
 * IW10); the all-zero setting is the default arm.
 */
struct tcp_rto_setting {
	__u16 syn_rto_ms;    /* BPF_SOCK_OPS_TIMEOUT_INIT */
	__u16 rto_min_ms;    /* TCP_BPF_RTO_MIN */
	__u16 delack_max_ms; /* TCP_BPF_DELACK_MAX */
	__u16 iw;            /* TCP_BPF_IW, segments */
};

#define TCP_RTO_CANDIDATES 4 /* a power of two: see decide() */

/* tcp_rto_value.flags */
enum tcp_rto_value_flags {
	/* Written by an operator (mlbpf recommend): the learner never
	 * overwrites or withdraws it. */
	TCP_RTO_VALUE_OPERATOR = 1,
};

/*
 * A recommendation for one destination prefix: n candidate settings, of
 * which each connection on the MODEL arm gets one drawn uniformly. n is 1
 * once the learner (or an operator) has chosen; while the learner
 * explores, the candidates are the grid's settings under trial (the
 * default's outcomes come from the CONTROL arm).
 */
struct tcp_rto_value {
	struct tcp_rto_setting cand[TCP_RTO_CANDIDATES];
	__u32 n;
	__u32 generation;
	__u32 flags;
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mlbpf_peer_key);
	__type(value, struct tcp_rto_value);
} recommend SEC(".maps");

/* tcp_rto_record.flags */
enum tcp_rto_flags {
	TCP_RTO_DONE = 1,        /* data and FIN acknowledged (FIN_WAIT2) */
	TCP_RTO_ESTABLISHED = 2, /* the handshake completed */
	TCP_RTO_OUT_OF_RANGE = 4, /* the setting was outside what the kernel accepts */
	TCP_RTO_SET_FAILED = 8,  /* the kernel refused a setsockopt */
	TCP_RTO_HAVE_REC = 16,   /* a recommendation was found */
	TCP_RTO_REVERTED = 32,   /* the model lost its say while the connection
				  * lived: its timers went back to their own */
};

/* One connection, as the learner sees it when it closes. */
struct tcp_rto_record {
	struct mlbpf_record_hdr hdr;
	__u8 daddr[16];         /* peer, IPv4-mapped for IPv4 */
	__u64 fct_ns;           /* connect to data+FIN acked (DONE), else to close */
	__u64 handshake_ns;     /* connect to established, 0 if never */
	__u64 bytes_acked;      /* sent and acknowledged */
	__u64 bytes_received;
	struct tcp_rto_setting setting; /* applied (all zero: every default) */
	__u32 total_retrans;    /* segments retransmitted, SYNs included */
	__u32 syn_retrans;      /* SYNs retransmitted */
	__u32 rto_timeouts;     /* retransmission timer expiries (RTO_CB) */
	__u32 dsack_dups;       /* DSACKed segments: spurious retransmissions */
	__u32 reord_seen;       /* reordering events (undone loss marks) */
	__u32 srtt_us;          /* smoothed RTT at close */
	__u32 rtt_min_us;
	__u32 data_segs_out;
	__u16 dport;
	__u8 family;            /* 4 or 6 */
	__u8 flags;             /* enum tcp_rto_flags */
	__u8 choice;            /* candidate drawn (MODEL arm) */
	__u8 pad[3];
};

MLBPF_MODEL_MAPS(struct tcp_rto_record, 1 << 20);

/* What the program remembers about one connection. */
struct tcp_rto_sk {
	__u64 start_ns;
	__u64 established_ns;
	__u64 done_ns;
	struct tcp_rto_setting setting;
	__u32 generation;
	__u32 syn_retrans;
	__u32 rto_timeouts;
	/* The socket's timers before the setting, in jiffies, to restore. */
	__u32 orig_rto_min;
	__u32 orig_delack_max;
	__u8 arm;
	__u8 mode;
	__u8 flags;
	__u8 choice;
};

/* Connections in progress by socket cookie; see tcp_cc.bpf.c. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_rto_sk);
} conns SEC(".maps");

/* Only so that bpf2go generates the enums for Go. */
enum tcp_rto_value_flags *unused_value_flags __attribute__((unused));
enum tcp_rto_flags *unused_flags __attribute__((unused));
enum tcp_rto_record_kind *unused_kind __attribute__((unused));

/* Connections that sent less end without a record. */
const volatile __u64 record_min_bytes = 0;

static __always_inline struct tcp_rto_sk *conn_state(struct bpf_sock_ops *ops)
{
	__u64 cookie = bpf_get_socket_cookie(ops);

	return bpf_map_lookup_elem(&conns, &cookie);
}

/* usecs_to_jiffies of ms, rounded up as the kernel rounds. */
static __always_inline __u32 ms_to_jiffies(__u32 ms)
{
	return (ms * CONFIG_HZ + 999) / 1000;
}

/* Would the kernel take this timer (TCP_BPF_RTO_MIN, TCP_BPF_DELACK_MAX)?
 * It refuses fewer than TCP_TIMEOUT_MIN (2) jiffies and more than
 * HZ / 5 (TCP_RTO_MIN, TCP_DELACK_MAX: 200 ms). */
static __always_inline bool timer_ok(__u32 ms)
{
	__u32 j = ms_to_jiffies(ms);

	return ms == 0 || (j >= 2 && j <= CONFIG_HZ / 5);
}

static __always_inline bool setting_ok(const struct tcp_rto_setting *s)
{
	/* Any SYN timeout fits: a __u16 of ms is below TCP_RTO_MAX. */
	return timer_ok(s->rto_min_ms) && timer_ok(s->delack_max_ms);
}

static __always_inline int set_timer(struct bpf_sock_ops *ops, int opt, __u32 ms)
{
	int us = ms * 1000;

	if (!ms)
		return 0;
	return bpf_setsockopt(ops, SOL_TCP, opt, &us, sizeof(us));
}

static __always_inline void decide(struct bpf_sock_ops *ops)
{
	struct tcp_rto_value *rec;
	struct mlbpf_peer_key key = {};
	mlbpf_reading_t c;
	struct tcp_rto_sk st = {};
	struct bpf_sock *sk = ops->sk;
	__u32 arm, n = 0, i = 0, cb;
	__u64 cookie;

	if (!sk || !mlbpf_peer_key(ops, &key))
		return;

	mlbpf_read_control(&control, &c);
	if (!mlbpf_reading_may_act(&c)) {
		mlbpf_count(&stats, MLBPF_ARM_FALLBACK);
		return;
	}

	rec = bpf_map_lookup_elem(&recommend, &key);
	if (rec) {
		n = rec->n;
		if (n > TCP_RTO_CANDIDATES)
			n = TCP_RTO_CANDIDATES;
	}
	arm = mlbpf_decide(&c, n > 0);
	if (n > 0) {
		st.flags |= TCP_RTO_HAVE_REC;
		if (arm == MLBPF_ARM_MODEL) {
			i = n > 1 ? bpf_get_prandom_u32() % n : 0;
			/* A bound the verifier can see (it does not follow
			 * %); in asm, or clang drops it as redundant. */
			asm volatile("%0 &= 3" : "+r"(i));
			/* Snapshot: user space may rewrite the value. */
			__builtin_memcpy(&st.setting, &rec->cand[i], sizeof(st.setting));
			st.choice = i;
		}
	}

	if (arm == MLBPF_ARM_MODEL && !setting_ok(&st.setting)) {
		arm = MLBPF_ARM_REJECTED;
		st.flags |= TCP_RTO_OUT_OF_RANGE;
	}
	if (arm == MLBPF_ARM_MODEL) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (tp) {
			st.orig_rto_min = BPF_CORE_READ(tp, inet_conn.icsk_rto_min);
			st.orig_delack_max = BPF_CORE_READ(tp, inet_conn.icsk_delack_max);
		}
	}
	if (arm == MLBPF_ARM_MODEL &&
	    (set_timer(ops, TCP_BPF_RTO_MIN, st.setting.rto_min_ms) ||
	     set_timer(ops, TCP_BPF_DELACK_MAX, st.setting.delack_max_ms))) {
		arm = MLBPF_ARM_REJECTED;
		st.flags |= TCP_RTO_SET_FAILED;
	}
	if (arm != MLBPF_ARM_MODEL)
		__builtin_memset(&st.setting, 0, sizeof(st.setting));
	mlbpf_count(&stats, arm);

	st.start_ns = bpf_ktime_get_ns();
	st.generation = c.generation;
	st.arm = arm;
	st.mode = c.mode;
	cookie = bpf_get_socket_cookie(ops);
	if (bpf_map_update_elem(&conns, &cookie, &st, BPF_ANY))
		return;
	cb = ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
	     BPF_SOCK_OPS_RTO_CB_FLAG;
	/* A connection with shortened timers is watched at every RTT sample
	 * so that they go back to the socket's own as soon as the model may
	 * no longer act (EMERGENCY, lease expired, stopped). */
	if (arm == MLBPF_ARM_MODEL && (st.setting.rto_min_ms || st.setting.delack_max_ms))
		cb |= BPF_SOCK_OPS_RTT_CB_FLAG;
	bpf_sock_ops_cb_flags_set(ops, cb);
}

/* At an RTT sample of a connection running a setting: if the model may
 * no longer act, restore the socket's own timers, once. The RTT callbacks
 * stay on: the flags are one word per socket, shared with every other
 * sock_ops program on it (tcp/cc on the same cgroup re-checks its own
 * connections at the same callbacks), so this program never clears one.
 * The callbacks of a socket that is not a connection of ours (tcp/cc
 * asked for them) cost a snapshot of the block, and a lookup once the
 * model may no longer act. */
static __always_inline void watch(struct bpf_sock_ops *ops)
{
	mlbpf_reading_t c;
	struct tcp_rto_sk *st;
	int us;

	mlbpf_read_control(&control, &c);
	if (mlbpf_reading_may_act(&c))
		return;
	st = conn_state(ops);
	if (!st || st->arm != MLBPF_ARM_MODEL || (st->flags & TCP_RTO_REVERTED))
		return;
	st->flags |= TCP_RTO_REVERTED;
	if (st->setting.rto_min_ms && st->orig_rto_min) {
		us = st->orig_rto_min * (1000000 / CONFIG_HZ);
		bpf_setsockopt(ops, SOL_TCP, TCP_BPF_RTO_MIN, &us, sizeof(us));
	}
	if (st->setting.delack_max_ms && st->orig_delack_max) {
		us = st->orig_delack_max * (1000000 / CONFIG_HZ);
		bpf_setsockopt(ops, SOL_TCP, TCP_BPF_DELACK_MAX, &us, sizeof(us));
	}
}

/* The SYN's retransmission timeout, in jiffies; 0 keeps the default. */
static __always_inline void timeout_init(struct bpf_sock_ops *ops)
{
	struct tcp_rto_sk *st = conn_state(ops);
	__u32 j;

	if (!st || !st->setting.syn_rto_ms)
		return;
	j = ms_to_jiffies(st->setting.syn_rto_ms);
	ops->reply = j ? j : 1;
}

static __always_inline void established(struct bpf_sock_ops *ops)
{
	struct tcp_rto_sk *st = conn_state(ops);
	int iw;

	if (!st)
		return;
	st->established_ns = bpf_ktime_get_ns();
	st->syn_retrans = ops->total_retrans;
	st->flags |= TCP_RTO_ESTABLISHED;
	iw = st->setting.iw;
	if (iw && bpf_setsockopt(ops, SOL_TCP, TCP_BPF_IW, &iw, sizeof(iw)))
		st->flags |= TCP_RTO_SET_FAILED;
}

static __always_inline void emit(struct bpf_sock_ops *ops)
{
	struct tcp_rto_record *r;
	struct mlbpf_peer_key key = {};
	__u64 cookie = bpf_get_socket_cookie(ops);
	struct tcp_rto_sk *st;
	struct tcp_sock *tp;
	struct bpf_sock *sk;
	__u64 now;

	st = bpf_map_lookup_elem(&conns, &cookie);
	if (!st)
		return;
	if (ops->bytes_acked < record_min_bytes)
		goto out;

	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		mlbpf_count_lost(&lost);
		goto out;
	}
	mlbpf_fill_hdr(&r->hdr, TCP_RTO_REC_KIND, sizeof(*r), st->arm, NULL);
	r->hdr.mode = st->mode;
	r->hdr.generation = st->generation;
	now = r->hdr.ts_ns;

	mlbpf_peer_key(ops, &key);
	__builtin_memcpy(r->daddr, key.addr, sizeof(r->daddr));
	r->family = ops->family == AF_INET6 ? 6 : 4;
	r->dport = bpf_ntohl(ops->remote_port);
	r->fct_ns = (st->done_ns ? st->done_ns : now) - st->start_ns;
	r->handshake_ns = st->established_ns ? st->established_ns - st->start_ns : 0;
	r->bytes_acked = ops->bytes_acked;
	r->bytes_received = ops->bytes_received;
	__builtin_memcpy(&r->setting, &st->setting, sizeof(r->setting));
	r->total_retrans = ops->total_retrans;
	r->syn_retrans = st->syn_retrans;
	r->rto_timeouts = st->rto_timeouts;
	r->dsack_dups = 0;
	r->reord_seen = 0;
	sk = ops->sk;
	tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;
	if (tp) {
		r->dsack_dups = BPF_CORE_READ(tp, dsack_dups);
		r->reord_seen = BPF_CORE_READ(tp, reord_seen);
	}
	r->srtt_us = ops->srtt_us >> 3;
	r->rtt_min_us = ops->rtt_min;
	r->data_segs_out = ops->data_segs_out;
	r->flags = st->flags;
	r->choice = st->choice;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
	bpf_ringbuf_submit(r, 0);
out:
	bpf_map_delete_elem(&conns, &cookie);
}

static __always_inline void state_change(struct bpf_sock_ops *ops)
{
	struct tcp_rto_sk *st;

	switch (ops->args[1]) {
	case BPF_TCP_FIN_WAIT2:
		/* Our data and FIN are acknowledged: the flow is complete. */
		st = conn_state(ops);
		if (st && !st->done_ns) {
			st->done_ns = bpf_ktime_get_ns();
			st->flags |= TCP_RTO_DONE;
		}
		break;
	case BPF_TCP_CLOSE:
		emit(ops);
		break;
	}
}

static __always_inline void rto_fired(struct bpf_sock_ops *ops)
{
	struct tcp_rto_sk *st = conn_state(ops);

	if (st)
		st->rto_timeouts++;
}

SEC("sockops")
int tcp_rto_sockops(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		decide(ops);
		break;
	case BPF_SOCK_OPS_TIMEOUT_INIT:
		timeout_init(ops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		established(ops);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		rto_fired(ops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		watch(ops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		state_change(ops);
		break;
	}
	return 1;
}
