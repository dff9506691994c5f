// Package rto is the tcp/rto model: the loss-recovery timers of TCP
// connections, chosen per destination prefix by a learner that minimises a
// high percentile of the flow completion time.
//
// The kernel side is bpf/tcp_rto.bpf.c, a sock_ops program attached to a
// cgroup v2 beside tcp/cc's (both models may run on one cgroup, each with
// its own pins under <pin root>/tcp/<model>/, control block, lease, arms
// and mode). For every connect()ed socket it looks the peer up in an LPM
// trie of recommendations (IPv4 stored IPv4-mapped, like tcp/cc's), decides
// with mlbpf_decide and, on the MODEL arm, applies one Setting:
//
//   - the SYN retransmission timeout (BPF_SOCK_OPS_TIMEOUT_INIT),
//   - the RTO floor (TCP_BPF_RTO_MIN),
//   - the delayed-ACK ceiling (TCP_BPF_DELACK_MAX),
//   - the initial congestion window (TCP_BPF_IW).
//
// A zero field keeps the kernel's default (1 s, 200 ms, 200 ms, IW10); the
// zero Setting is the default arm, which every other arm falls back to. A
// setting the kernel would refuse (RTO_MIN or DELACK_MAX below 2 jiffies or
// above 200 ms: outside 5-200 ms at HZ=250, where 5-7 ms round up to 8 ms)
// is refused here (Setting.Validate) and, if written to the map
// anyway, by the program, which counts it REJECTED.
//
// The outcome record of a connection (Record, decoded to Flow) carries its
// flow completion time measured in BPF, from connect to the moment its data
// and FIN are acknowledged, with its SYN retransmits, retransmissions,
// timer expiries and the spurious-retransmission signals the kernel keeps
// (DSACKed segments, reordering events).
//
// The Learner explores an ordered Grid per prefix (COLLABORATION: the
// control group runs the default, the rest draw a candidate), then keeps
// the setting whose tail (the mean flow completion time of the worst 10 %
// of its flows but the worst 1 %) is lowest provided its upper confidence
// bound beats the default's lower one: an aggressive setting must win
// clearly, since it can also lose badly (spurious SYN retransmissions on a
// long path leave a connection with a congestion window of 1). The model's
// mode follows the learner (Objects.EstimateSystemState says why not the
// shared controller's promotions); its feedback's reward is the flow's
// completion time relative to its prefix's default mean.
package rto
