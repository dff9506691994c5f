// Package testbed builds a slow block device on one machine, for the
// tests, benchmark and demonstration of the storage/readahead model:
//
//	tmpfs (a private mount)
//	  └─ disk.img ── loop device (/dev/loopN, autoclear)
//	                   └─ ext4, mounted privately, holding the workload files
//	io controller: reads of the loop device by the testbed's cgroup are
//	throttled (cgroup v2 io.max where the v2 hierarchy offers the io
//	controller, cgroup v1 blkio.throttle.read_{iops,bps}_device otherwise)
//
// The backing file lives in memory, so the device's speed is the
// throttle's alone: a loop device capped at 100 read IOPS behaves like a
// disk whose cost is per request (large readahead wins on sequential
// reads), one capped in bytes per second like a disk whose cost is per
// byte (small readahead wins on random page faults).
//
// Config.Disk puts the backing file on a disk with additive cost instead
// (the throttle charges a request the larger of its per-request and
// per-byte costs, a real disk their sum, and only the sum makes a
// sequential phase and a page-fault phase want different readahead):
//
//	tmpfs
//	  └─ disk.img ── FUSE file system, served by a child process (the
//	                 running executable again) that charges every read
//	                 request + seek + bytes/bandwidth, direct I/O
//	                   └─ disk/disk.img ── loop device ── ext4
//
// A filesystem is mounted on the device so that every page of the
// workload's files is attributed to the device (the tracepoints name the
// superblock's device), as on a real host.
//
// Throttle moves the calling process into the testbed's cgroup: every
// read the process (any goroutine) makes from the loop device is
// throttled, reads of other devices are not. DropCache empties the page
// cache of this device only: the workload files' pages (fadvise
// DONTNEED) and the device's own buffer cache (BLKFLSBUF), never the
// host's.
//
// Workloads (Run): seq (large sequential reads of one file), random
// (4 KiB preads at random offsets), mmap (random page faults in a
// mapping), phased (the three in turn, a fixed amount of work each: a
// job). Each reopens its file often: the kernel copies a device's
// readahead setting into a file's readahead state when the file is
// opened, so a new read_ahead_kb reaches files opened after it is set.
//
// Close removes everything (the mount, the loop device, the tmpfs, the
// cgroup) and may be called more than once; New also removes what the
// testbeds of dead processes left behind, so a killed test leaves
// nothing for long.
package testbed
