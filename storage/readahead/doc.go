// Package readahead is the storage/readahead model: it learns, per block
// device and per workload phase, the readahead setting (read_ahead_kb)
// that serves the device's readers best.
//
// A BPF collector (bpf/readahead.bpf.c) watches the tracepoints of
// readahead, the page cache and the block layer and writes one record per
// device per short window into the model's ring: how sequential the
// reads are, request sizes, pages read in and evicted, bytes read from
// the device against bytes the workload asked for, request latency.
//
// No BPF hook can set a device's readahead, so the applier is user
// space: it writes read_ahead_kb in sysfs, records the device's original
// value in the state directory before the first change, and restores it
// on every fallback. A watchdog process restores it after a SIGKILL of
// the daemon, once the model's lease has run out.
package readahead
