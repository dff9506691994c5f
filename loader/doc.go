// Package loader loads mlbpf's BPF objects, pins their maps under
// /sys/fs/bpf/mlbpf/<subsystem>/<model>/, adopts existing pins after a
// restart, probes the kernel features a model needs and reports what is
// missing with a line saying what to do.
//
// It also owns the Go side of the shared header bpf/include/mlbpf.h: the
// control block, the record header and the enums are generated from it by
// bpf2go (abi_bpfel.go) and re-exported here under readable names.
//
// The pinned layout of one model:
//
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/control    array, 1 entry: struct mlbpf_control
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/stats      per-CPU array: arm -> count
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/lost       per-CPU array: failed ring buffer reservations
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/events     ring buffer of records
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/recommend  the model's recommendations (subsystem-specific)
//	/sys/fs/bpf/mlbpf/<subsystem>/<model>/link       the attached applier's link, where the subsystem pins it
//
// Every map is pinned with its BTF, so
//
//	bpftool -j map dump pinned /sys/fs/bpf/mlbpf/synthetic/demo/control
//
// prints the control block by field name.
package loader
