//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lossy: random packet loss for the testbed, where netem is not built.
 *
 * A tc (clsact) program that drops a configured share of the TCP packets
 * leaving an interface, drawn independently per packet with
 * bpf_get_prandom_u32(). Everything else (ARP, neighbour discovery) passes,
 * so the loss is the transport's alone. On a veth with GSO a "packet" is
 * the skb the stack hands the device, which can hold several segments.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define LOSSY_PPM 1000000

/* The knob, written by the testbed at any time. */
struct lossy_settings {
	__u32 drop_ppm; /* parts per million of TCP packets dropped */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lossy_settings);
} settings SEC(".maps");

enum lossy_counter {
	LOSSY_PASSED = 0,
	LOSSY_DROPPED = 1,
	LOSSY_COUNTER_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSSY_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

enum lossy_counter *unused_counter __attribute__((unused));

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);

	if (n)
		*n += 1;
}

static __always_inline bool is_tcp(struct __sk_buff *skb)
{
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		/* ethernet header, then the IPv4 protocol field at 9 */
		if (bpf_skb_load_bytes(skb, 14 + 9, &proto, 1))
			return false;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* next header at 6; extension headers are not followed */
		if (bpf_skb_load_bytes(skb, 14 + 6, &proto, 1))
			return false;
	} else {
		return false;
	}
	return proto == IPPROTO_TCP;
}

SEC("tc")
int lossy(struct __sk_buff *skb)
{
	struct lossy_settings *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&settings, &zero);
	if (!s || !s->drop_ppm || !is_tcp(skb))
		return TC_ACT_OK;
	if (bpf_get_prandom_u32() % LOSSY_PPM < s->drop_ppm) {
		count(LOSSY_DROPPED);
		return TC_ACT_SHOT;
	}
	count(LOSSY_PASSED);
	return TC_ACT_OK;
}
