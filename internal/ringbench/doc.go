// Package ringbench holds the producer side of ringbuf's tests and of the
// ring buffer benchmark (cmd/ringbench): the BPF object built from
// bpf/ringbuf_bench.bpf.c, helpers to make it emit records, and the
// benchmark itself, which compares package ringbuf with cilium/ebpf's
// reader and libbpf's ring_buffer__consume on the same ring.
package ringbench
