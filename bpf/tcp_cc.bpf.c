//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp/cc: the congestion control of a TCP connection, chosen per
 * destination by a model.
 *
 * A sock_ops program attached to a cgroup v2. For every connection of the
 * cgroup it
 *   - at TCP_CONNECT_CB (active open, before the SYN is sent, so the whole
 *     connection runs the chosen algorithm) or PASSIVE_ESTABLISHED_CB
 *     (passive open, before the kernel initialises congestion control),
 *     looks the peer up in the LPM trie "recommend", decides with
 *     mlbpf_decide_blocked() (COLLABORATION split in permuted blocks) and,
 *     on the MODEL arm only, sets TCP_CONGESTION;
 *   - while the connection runs the default algorithm, keeps the peak
 *     delivery-rate sample the kernel measured (RTT_CB), the evidence the
 *     learner's counterfactual model needs (see tcp/doc.go);
 *   - while the connection runs the model's algorithm (MODEL arm),
 *     re-checks the control block at every RTT sample (RTT_CB) and
 *     retransmission timeout (RTO_CB) and, once
 *     the model may no longer apply anything (not RUNNING, lease expired,
 *     EMERGENCY, or demoted to LEARNING), sets the connection back to its
 *     network namespace's default algorithm (net.ipv4.tcp_congestion_control):
 *     a fallback reaches live connections too, one RTT sample after it
 *     (see revert());
 *   - when the connection reaches TCP_CLOSE, emits one outcome record
 *     (struct tcp_conn_record) to the model's ring buffer, if it sent at
 *     least record_min_bytes.
 *
 * Nothing is remembered, and no record written, while the model is not
 * RUNNING or its lease has expired: a host without its daemon pays a map
 * lookup per connection.
 *
 * The callback flags (bpf_sock_ops_cb_flags) are one word per socket,
 * shared by every sock_ops program of its cgroup and of the cgroups above
 * it: tcp/rto on the same cgroup, a stopped tcp/cc whose pins a daemon
 * left at the host's root. So the program only ever adds flags, never
 * clears one another program may need, and never reads one as a mark of
 * its own: what a connection is to tcp/cc is in its entry in conns, and a
 * callback for a connection without one does nothing.
 *
 * A socket whose congestion control was already chosen by someone else is
 * left alone and counted as MLBPF_ARM_SKIPPED: the application called
 * setsockopt(TCP_CONGESTION) (icsk_ca_setsockopt, set even when it asked
 * for the default), or the route pins an algorithm with "congctl lock"
 * (icsk_ca_dst_locked, inherited by passive children).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "mlbpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6
#define TCP_CONGESTION 13
#define TCP_CC_NAME_MAX 16

/*
 * Key of the recommendation trie. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so one trie serves both families: an IPv4 /n prefix
 * has prefixlen 96 + n.
 */
struct tcp_cc_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* tcp_cc_value.flags */
enum tcp_cc_value_flags {
	/* Written by an operator (mlbpf recommend): the learner never
	 * overwrites or withdraws it. */
	TCP_CC_VALUE_OPERATOR = 1,
};

/* A recommendation: the congestion control for one destination prefix. */
struct tcp_cc_value {
	char cc[TCP_CC_NAME_MAX];
	__u32 generation;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tcp_cc_key);
	__type(value, struct tcp_cc_value);
} recommend SEC(".maps");

/* tcp_conn_record.flags */
enum tcp_conn_flags {
	TCP_CONN_PASSIVE = 1,   /* accepted, not connected */
	TCP_CONN_RATE = 2,      /* max_rate_bps was sampled */
	TCP_CONN_SET_FAILED = 4, /* the kernel refused the recommendation */
	TCP_CONN_REVERTED = 8,  /* MODEL arm, set back to the default when
				 * the model fell back mid-connection */
	TCP_CONN_APP_CHOSE = 16, /* MODEL arm, the application chose its own
				  * algorithm since: left alone */
};

/* One connection, as the learner sees it when it closes. */
struct tcp_conn_record {
	struct mlbpf_record_hdr hdr;
	__u8 daddr[16];        /* peer, IPv4-mapped for IPv4 */
	__u64 duration_ns;     /* decision (connect/accept) to TCP_CLOSE */
	__u64 bytes_acked;     /* sent and acknowledged */
	__u64 bytes_received;
	__u64 max_rate_bps;    /* peak delivery-rate sample, bytes/s */
	__u32 srtt_us;         /* smoothed RTT at close */
	__u32 rtt_min_us;      /* minimum RTT seen */
	__u32 total_retrans;   /* segments retransmitted */
	__u32 data_segs_out;   /* data segments sent, retransmissions included */
	__u32 mss;
	__u16 dport;
	__u8 family;           /* 4 or 6 */
	__u8 flags;            /* enum tcp_conn_flags */
	char cc[TCP_CC_NAME_MAX];          /* algorithm in use at close */
	char recommended[TCP_CC_NAME_MAX]; /* looked up at the decision, "" if none */
};

MLBPF_MODEL_MAPS(struct tcp_conn_record, 1 << 20);

/* What the program remembers about one connection. */
struct tcp_cc_sk {
	__u64 start_ns;
	__u64 max_rate_bps;
	__u32 generation;
	__u8 arm;
	__u8 mode;
	__u8 flags;
	__u8 pad;
	char recommended[TCP_CC_NAME_MAX];
};

/*
 * Connections in progress, by socket cookie. A preallocated LRU hash
 * rather than socket-local storage: nothing is allocated per connection,
 * and nothing is left to free when the socket is destroyed. The entry is
 * deleted at TCP_CLOSE; one whose close was never seen (the program was
 * detached meanwhile) is evicted when the map fills.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_cc_sk);
} conns SEC(".maps");

static __always_inline struct tcp_cc_sk *conn_state(struct bpf_sock_ops *ops)
{
	__u64 cookie = bpf_get_socket_cookie(ops);

	return bpf_map_lookup_elem(&conns, &cookie);
}

/* Only so that bpf2go generates the flag enums for Go. */
enum tcp_cc_value_flags *unused_value_flags __attribute__((unused));
enum tcp_conn_flags *unused_conn_flags __attribute__((unused));

/* Handle accepted connections too (server side). */
const volatile __u8 handle_passive = 1;
/* Sample the delivery rate of connections running the default. */
const volatile __u8 rate_probe = 1;
/* Connections that sent less (bytes acked) end without a record: they say
 * nothing about congestion control, and hosts have many of them. */
const volatile __u64 record_min_bytes = 0;

/* COLLABORATION's split, drawn in permuted blocks across all
 * connections (the mode controller tests the split of them all): one for
 * active opens, one for passive ones. A connection between two sockets
 * of the cgroup (a client and its server on the same host) takes one
 * decision of each kind; from one block, the server's would always be
 * the complement of the client's, and the clients' own split coin flips. */
struct mlbpf_block collab_blocks[2];

/* Keep clang from moving a load across this point. */
#define pin_value(v) asm volatile("" : "+r"(v))

/*
 * Fill key with the peer address; false for a family we do not handle.
 * Each context load is pinned in its branch: clang would otherwise merge
 * the IPv4 and IPv6 loads into one load at a variable offset, which the
 * verifier refuses for a context pointer.
 */
static __always_inline bool peer_key(struct bpf_sock_ops *ops, struct tcp_cc_key *key)
{
	__u32 *a = (__u32 *)key->addr;
	__u32 family = ops->family, w0, w1, w2, w3;

	if (family == AF_INET) {
		w0 = 0;
		w1 = 0;
		w2 = bpf_htonl(0xffff);
		w3 = ops->remote_ip4;
		pin_value(w3);
	} else if (family == AF_INET6) {
		w0 = ops->remote_ip6[0];
		pin_value(w0);
		w1 = ops->remote_ip6[1];
		pin_value(w1);
		w2 = ops->remote_ip6[2];
		pin_value(w2);
		w3 = ops->remote_ip6[3];
		pin_value(w3);
	} else {
		return false;
	}
	a[0] = w0;
	a[1] = w1;
	a[2] = w2;
	a[3] = w3;
	key->prefixlen = 128;
	return true;
}

/* Has the application (or a route lock) already chosen the algorithm? */
static __always_inline bool chosen_elsewhere(struct bpf_sock *sk)
{
	struct tcp_sock *tp;

	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return false;
	return BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_setsockopt) ||
	       BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_dst_locked);
}

static __always_inline bool lease_live(const struct mlbpf_snapshot *s)
{
	return s->state == MLBPF_MODEL_RUNNING &&
	       bpf_ktime_get_ns() <= s->lease_expires_ns;
}

/* Does a connection on this arm run the default algorithm? Only those are
 * sampled: the counterfactual model needs the delivery rate of connections
 * on the default. */
static __always_inline bool on_default(__u8 arm)
{
	return arm == MLBPF_ARM_NO_REC || arm == MLBPF_ARM_SHADOW ||
	       arm == MLBPF_ARM_CONTROL || arm == MLBPF_ARM_FALLBACK;
}

/* Does a connection on this arm want RTT samples: to sample the delivery
 * rate of the default, or to re-check the model's algorithm? */
static __always_inline bool wants_rtt(__u8 arm)
{
	return arm == MLBPF_ARM_MODEL || (rate_probe && on_default(arm));
}

/*
 * Adds callbacks, keeping every flag already set (by this program or
 * another). A connection on the model's algorithm asks for RTO callbacks
 * too: they re-check the block when a stalled connection times out.
 */
static __always_inline void set_callbacks(struct bpf_sock_ops *ops, bool rtt, bool model)
{
	__u32 cb = ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG;

	if (rtt)
		cb |= BPF_SOCK_OPS_RTT_CB_FLAG;
	if (model)
		cb |= BPF_SOCK_OPS_RTO_CB_FLAG;
	bpf_sock_ops_cb_flags_set(ops, cb);
}

/* Is the connection on the model's algorithm, to be re-checked? */
static __always_inline bool watched(const struct tcp_cc_sk *st)
{
	return st->arm == MLBPF_ARM_MODEL &&
	       !(st->flags & (TCP_CONN_REVERTED | TCP_CONN_APP_CHOSE));
}

/* An active connection asks for RTT samples once established: the
 * handshake's sample says nothing about the path's bandwidth, and each
 * callback costs a program run. */
static __always_inline void established(struct bpf_sock_ops *ops)
{
	struct tcp_cc_sk *st = conn_state(ops);

	if (st && wants_rtt(st->arm))
		set_callbacks(ops, true, false);
}

static __always_inline void decide(struct bpf_sock_ops *ops, bool passive)
{
	char cc[TCP_CC_NAME_MAX] = {};
	struct tcp_cc_value *rec;
	struct tcp_cc_key key = {};
	struct mlbpf_snapshot snap;
	struct tcp_cc_sk st = {};
	bool have_rec = false;
	__u64 cookie;
	__u32 zero = 0, arm;
	__u8 flags = passive ? TCP_CONN_PASSIVE : 0;
	struct bpf_sock *sk = ops->sk;

	if (!sk || !peer_key(ops, &key))
		return;

	/* One version of the block for the decision and its record. */
	mlbpf_snapshot_take(bpf_map_lookup_elem(&control, &zero), &snap);
	if (!lease_live(&snap)) {
		/* No daemon: the kernel's default, nothing remembered, no
		 * record, almost no cost. */
		mlbpf_count(&stats, MLBPF_ARM_FALLBACK);
		return;
	}

	rec = bpf_map_lookup_elem(&recommend, &key);
	if (rec) {
		/* Snapshot: user space may rewrite the value meanwhile. */
		__builtin_memcpy(cc, rec->cc, sizeof(cc));
		cc[TCP_CC_NAME_MAX - 1] = 0;
		have_rec = cc[0] != 0;
	}

	if (chosen_elsewhere(sk))
		arm = MLBPF_ARM_SKIPPED;
	else
		arm = mlbpf_decide_blocked(&snap, have_rec, &collab_blocks[passive]);

	if (arm == MLBPF_ARM_MODEL &&
	    bpf_setsockopt(ops, SOL_TCP, TCP_CONGESTION, cc, sizeof(cc))) {
		arm = MLBPF_ARM_REJECTED;
		flags |= TCP_CONN_SET_FAILED;
	}
	mlbpf_count(&stats, arm);

	st.start_ns = bpf_ktime_get_ns();
	st.max_rate_bps = 0;
	st.generation = snap.generation;
	st.arm = arm;
	st.mode = snap.mode;
	st.flags = flags;
	__builtin_memcpy(st.recommended, cc, sizeof(cc));
	cookie = bpf_get_socket_cookie(ops);
	if (bpf_map_update_elem(&conns, &cookie, &st, BPF_ANY))
		return;

	/* The close, always (a connection that fails before it is
	 * established must free its entry too); RTT samples from now on for
	 * a passive connection, from establishment for an active one. */
	set_callbacks(ops, passive && wants_rtt(arm), arm == MLBPF_ARM_MODEL);
}

static __always_inline void sample_rate(struct bpf_sock_ops *ops, struct tcp_cc_sk *st)
{
	__u32 delivered = ops->rate_delivered, interval = ops->rate_interval_us;
	__u64 rate;

	if (!delivered || !interval || interval > (1U << 31))
		return;
	rate = (__u64)delivered * ops->mss_cache * 1000000 / interval;
	if (rate > st->max_rate_bps)
		st->max_rate_bps = rate;
}

/* The algorithm of the socket's network namespace, the one it got or
 * would have got without the model: net.ipv4.tcp_congestion_control as it
 * is now. */
static __always_inline bool namespace_default(struct bpf_sock_ops *ops,
					      char (*name)[TCP_CC_NAME_MAX])
{
	const struct tcp_congestion_ops *ca;
	struct tcp_sock *tp;
	struct bpf_sock *sk = ops->sk;

	if (!sk)
		return false;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return false;
	ca = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_net.net,
			   ipv4.tcp_congestion_control);
	if (!ca || BPF_CORE_READ_STR_INTO(name, ca, name) <= 0)
		return false;
	(*name)[TCP_CC_NAME_MAX - 1] = 0;
	return true;
}

/*
 * revert - a connection on the model's algorithm (watched()), at one of
 * its RTT samples or RTOs: does the model still apply? If it fell back
 * (the same conditions under which decide() would take FALLBACK, or a
 * demotion to LEARNING, where nothing is applied), set the connection back
 * to its namespace's default; the record says TCP_CONN_REVERTED. A
 * connection whose application has chosen another algorithm since is left
 * alone (TCP_CONN_APP_CHOSE). Either way it is not re-checked again. While
 * the model applies, a re-check costs the lookup of the connection's entry
 * and a snapshot of the block.
 *
 * The callbacks stay on: another program on the socket may need them (see
 * the top of this file). A connection no longer watched costs the lookup
 * at each of its callbacks.
 *
 * An RTT sample comes with every ACK that acknowledges new data, so the
 * fallback reaches a connection that moves data within about one RTT; an
 * idle connection takes no callback and keeps the model's algorithm until
 * it sends again (its first ACK, or RTO, after that reverts it). Nothing
 * kernel-side fires on an idle socket without a timer of our own.
 */
static __always_inline bool same_name(const char *a, const char *b)
{
	for (int i = 0; i < TCP_CC_NAME_MAX; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

static __always_inline void revert(struct bpf_sock_ops *ops, struct tcp_cc_sk *st)
{
	char dflt[TCP_CC_NAME_MAX] = {}, cur[TCP_CC_NAME_MAX] = {};
	struct mlbpf_snapshot snap;
	__u32 zero = 0;

	/* A block being rewritten right now is no reason to revert: the next
	 * callback will see it whole. */
	if (!mlbpf_snapshot_take(bpf_map_lookup_elem(&control, &zero), &snap))
		return;
	if (mlbpf_may_act(&snap) && (snap.mode == MLBPF_MODE_COLLABORATION ||
				     snap.mode == MLBPF_MODE_RECOMMENDATION))
		return;
	/* From here on, once per connection. */
	if (!bpf_getsockopt(ops, SOL_TCP, TCP_CONGESTION, cur, sizeof(cur)) &&
	    !same_name(cur, st->recommended)) {
		/* The application chose another algorithm since: its own. */
		st->flags |= TCP_CONN_APP_CHOSE;
		return;
	}
	if (!namespace_default(ops, &dflt))
		return;
	if (bpf_setsockopt(ops, SOL_TCP, TCP_CONGESTION, dflt, sizeof(dflt)))
		return; /* tried again at the next callback */
	st->flags |= TCP_CONN_REVERTED;
}

/*
 * An RTT sample: re-check a watched connection, or keep the delivery rate
 * of one on the default. Only after the handshake: its sample says nothing
 * about the path's bandwidth (another program may have asked for the
 * handshake's callbacks).
 */
static __always_inline void rtt_sample(struct bpf_sock_ops *ops)
{
	struct tcp_cc_sk *st = conn_state(ops);

	if (!st)
		return;
	if (st->arm == MLBPF_ARM_MODEL) {
		if (watched(st))
			revert(ops, st);
		return;
	}
	if (rate_probe && on_default(st->arm) && ops->state != BPF_TCP_SYN_SENT &&
	    ops->state != BPF_TCP_SYN_RECV)
		sample_rate(ops, st);
}

static __always_inline void emit(struct bpf_sock_ops *ops)
{
	struct tcp_conn_record *r;
	struct tcp_cc_key key = {};
	__u64 cookie = bpf_get_socket_cookie(ops);
	struct tcp_cc_sk *st;

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
	mlbpf_fill_hdr(&r->hdr, MLBPF_REC_TCP_CONN, sizeof(*r), st->arm, NULL);
	/* The mode and generation of the decision, not of now. */
	r->hdr.mode = st->mode;
	r->hdr.generation = st->generation;

	peer_key(ops, &key);
	__builtin_memcpy(r->daddr, key.addr, sizeof(r->daddr));
	r->family = ops->family == AF_INET6 ? 6 : 4;
	r->dport = bpf_ntohl(ops->remote_port);
	r->duration_ns = r->hdr.ts_ns - st->start_ns;
	r->bytes_acked = ops->bytes_acked;
	r->bytes_received = ops->bytes_received;
	r->max_rate_bps = st->max_rate_bps;
	r->srtt_us = ops->srtt_us >> 3; /* the kernel keeps srtt << 3 */
	r->rtt_min_us = ops->rtt_min;
	r->total_retrans = ops->total_retrans;
	r->data_segs_out = ops->data_segs_out;
	r->mss = ops->mss_cache;
	r->flags = st->flags | (st->max_rate_bps ? TCP_CONN_RATE : 0);
	__builtin_memcpy(r->recommended, st->recommended, sizeof(r->recommended));
	if (bpf_getsockopt(ops, SOL_TCP, TCP_CONGESTION, r->cc, sizeof(r->cc)))
		r->cc[0] = 0;
	r->cc[TCP_CC_NAME_MAX - 1] = 0;
	bpf_ringbuf_submit(r, 0);
out:
	bpf_map_delete_elem(&conns, &cookie);
}

SEC("sockops")
int tcp_cc_sockops(struct bpf_sock_ops *ops)
{
	struct tcp_cc_sk *st;

	switch (ops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		decide(ops, false);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		established(ops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (handle_passive)
			decide(ops, true);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		rtt_sample(ops);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		st = conn_state(ops);
		if (st && watched(st))
			revert(ops, st);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (ops->args[1] == BPF_TCP_CLOSE)
			emit(ops);
		break;
	}
	return 1;
}
