//go:build linux

// Command guestinit is the first process of a vmtest guest. The harness
// builds it statically (CGO_ENABLED=0) and packs it as /init into the
// initramfs, next to the test binaries and the plan (package plan).
//
// As PID 1 it mounts proc, sysfs, devtmpfs, tmpfs on /tmp and /run, bpffs,
// tracefs, debugfs and cgroup2, brings up lo, raises the memlock limit,
// loads the plan's kernel modules and runs the test binaries one after the
// other with the console as their output. It prints a marker line after
// each binary and one at the end, then powers the machine off. It never
// exits: the kernel panics when PID 1 exits.
//
// The test binaries are separate processes started after the mounts, which
// matters for cilium/ebpf: it reads /proc/self/mountinfo once, the first
// time it is used, and keeps what it found.
//
// Not as PID 1 (under virtme-ng, whose own init has mounted the usual
// file systems) it mounts only what is missing, runs the plan with -plan
// and exits with the status instead of powering off.
package main
