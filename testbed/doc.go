// Package testbed builds a two-host network on one machine, for tests,
// benchmarks and demonstrations of the TCP subsystem with real TCP:
//
//	client netns                               server netns
//	  veth0 198.18.0.1/24  <-- veth pair -->  veth0 198.18.0.2/24
//	        fd00:6d6c:6270::1/64                    fd00:6d6c:6270::2/64
//	  egress: optional tbf rate limit            ingress: tc clsact + lossy (random drop)
//
// The addresses are from the benchmarking range (RFC 2544) and a unique
// local prefix: the traffic never leaves the two namespaces. Both
// namespaces run the same default congestion control (cubic unless
// configured) with net.ipv4.tcp_no_metrics_save=1, so that no connection
// inherits an ssthresh cached by an earlier one.
//
// Loss is emulated by a tc BPF program (bpf/lossy.bpf.c) that drops a
// configured share of the TCP packets from the client as they arrive at
// the server, drawn with bpf_get_prandom_u32, since netem is not available
// everywhere. Dropping on arrival, not at the client's egress, matters: a
// drop at the sender's own qdisc is reported to TCP as local congestion,
// not as loss. The share can be changed at any time with SetLoss.
//
// sock_ops programs apply per cgroup v2. With Config.Cgroup the testbed
// creates a child cgroup and moves the calling process into it for its
// lifetime, so that every socket the process creates (through Dial and
// Listen, which create sockets inside a namespace from a thread locked to
// it) and every command it starts (Start) is covered by a program
// attached to that cgroup, and nothing else on the host is. Outside runs a
// function with the process in a sibling cgroup instead, so that a
// benchmark can measure the same traffic with and without such a program
// in one run (a second iperf3 server on another port, StartIperfPort,
// started outside, serves it).
//
// A namespace other than the host's may only default to an algorithm in
// the host's net.ipv4.tcp_allowed_congestion_control: the testbed adds its
// algorithm there while it lives and restores the list afterwards (the
// next testbed does, if the process died first; it also removes the
// namespaces and cgroups of dead processes' testbeds).
//
// Close removes everything: commands, filters, qdiscs, namespaces (the
// veth pair goes with them) and the cgroup. New arranges for Close to run
// when its context is cancelled (Ctrl-C in a command), and Close may be
// called more than once.
//
// One testbed with Config.Cgroup may exist per process at a time.
package testbed
