/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mlbpf_sockops.h - what the sock_ops appliers (tcp/rto; tcp/cc's
 * tcp_cc.bpf.c still has its own copy) share: the key of a per-destination
 * LPM trie and the peer address of a socket in it.
 *
 * Include it after mlbpf.h.
 */
#ifndef __MLBPF_SOCKOPS_H
#define __MLBPF_SOCKOPS_H

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/*
 * Key of a recommendation trie. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so one trie serves both families: an IPv4 /n prefix
 * has prefixlen 96 + n.
 */
struct mlbpf_peer_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#ifdef __BPF__

/* Keep clang from moving a load across this point. */
#define mlbpf_pin_value(v) asm volatile("" : "+r"(v))

/*
 * Fill key with the peer address as a /128; false for a family not
 * handled. Each context load is pinned in its branch: clang would
 * otherwise merge the IPv4 and IPv6 loads into one load at a variable
 * offset, which the verifier refuses for a context pointer.
 */
static __always_inline bool mlbpf_peer_key(struct bpf_sock_ops *ops,
					   struct mlbpf_peer_key *key)
{
	__u32 *a = (__u32 *)key->addr;
	__u32 family = ops->family, w0, w1, w2, w3;

	if (family == AF_INET) {
		w0 = 0;
		w1 = 0;
		w2 = bpf_htonl(0xffff);
		w3 = ops->remote_ip4;
		mlbpf_pin_value(w3);
	} else if (family == AF_INET6) {
		w0 = ops->remote_ip6[0];
		mlbpf_pin_value(w0);
		w1 = ops->remote_ip6[1];
		mlbpf_pin_value(w1);
		w2 = ops->remote_ip6[2];
		mlbpf_pin_value(w2);
		w3 = ops->remote_ip6[3];
		mlbpf_pin_value(w3);
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

/*
 * One reading of a model's control block, and whether the model may act
 * under it (RUNNING, a live lease, a mode from LEARNING up). With the
 * seqcount-latched control block of mlbpf.h (MLBPF_SNAPSHOT_TRIES), a
 * reading is one consistent version (mlbpf_snapshot_take); before it, a
 * copy of the block. Either way the decision and its record come from the
 * same reading.
 */
#ifdef MLBPF_SNAPSHOT_TRIES
typedef struct mlbpf_snapshot mlbpf_reading_t;

static __always_inline void mlbpf_read_control(void *control_map, mlbpf_reading_t *r)
{
	__u32 zero = 0;

	mlbpf_snapshot_take(bpf_map_lookup_elem(control_map, &zero), r);
}

static __always_inline bool mlbpf_reading_may_act(const mlbpf_reading_t *r)
{
	return mlbpf_may_act(r);
}
#else
typedef struct mlbpf_control mlbpf_reading_t;

static __always_inline void mlbpf_read_control(void *control_map, mlbpf_reading_t *r)
{
	__u32 zero = 0;
	struct mlbpf_control *c = bpf_map_lookup_elem(control_map, &zero);

	if (c)
		__builtin_memcpy(r, c, sizeof(*r));
	else
		__builtin_memset(r, 0, sizeof(*r));
}

static __always_inline bool mlbpf_reading_may_act(const mlbpf_reading_t *r)
{
	return r->state == MLBPF_MODEL_RUNNING &&
	       bpf_ktime_get_ns() <= r->lease_expires_ns &&
	       r->mode >= MLBPF_MODE_LEARNING && r->mode < MLBPF_MODE_MAX;
}
#endif

#endif /* __BPF__ */

#endif /* __MLBPF_SOCKOPS_H */
