// Package synthetic is mlbpf's test device, the counterpart of the ml-lib
// RFC's test subsystem: a subsystem small enough to drive deterministically
// and complete enough to exercise the whole model lifecycle and every mode
// with real BPF programs.
//
// A request carries a key. The subsystem's default algorithm answers
// key % 64; a model may recommend another value per key through the pinned
// "recommend" map. The applier, synth_apply, decides per invocation with
// the kernel-enforced mode state machine (mlbpf_decide in
// bpf/include/mlbpf.h), counts the arm it took, and writes one outcome
// record per decision into the model's ring buffer.
//
// The applier is a raw tracepoint program: tests drive it with
// BPF_PROG_TEST_RUN (Objects.Apply), and the daemon attaches it to
// raw_syscalls:sys_enter, where the key is the syscall number, and pins
// its link beside the maps: a daemon that dies leaves the applier
// attached, and the lease returns the kernel to the default (see
// Objects.Start).
package synthetic
