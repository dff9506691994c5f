// Command vmtest runs mlbpf's Go tests as root inside a virtual machine
// booting another kernel, so that the BPF code is tested on the kernels
// users run (Debian's 6.1 and 6.12) and not only on the host's.
//
// Usage:
//
//	go run ./vmtest [-kernel 6.1|6.12|linux-image-…|….deb|URL of a .deb|/path/to/bzImage]
//	                [-modules dir] [-pkgs ./...] [-run regexp] [-timeout 20m] [-v]
//	                [-- test binary flags]
//
// For example:
//
//	go run ./vmtest -kernel 6.1 -pkgs ./loader,./ringbuf
//	go run ./vmtest -kernel 6.12 -run 'TestPin|TestRing'
//	go run ./vmtest -kernel 6.1 -- -test.count=2 -test.short
//
// It prints the tests' output as it comes (go test -v style, with an
// "ok"/"FAIL" line per package) and exits with their status: 0 when every
// package passed, else the exit status of the first failing test binary;
// 1 when the machine did not finish (see Failures); 2 for a bad flag.
//
// # How it works
//
// On the host:
//
//  1. The kernel is resolved (package kernel). "6.1" and "6.12" name
//     Debian's meta-packages linux-image-amd64 and linux-image-6.12-amd64;
//     apt-cache follows them to the newest image package, apt-get download
//     fetches it and dpkg-deb -x unpacks it into the cache directory
//     ($MLBPF_VMTEST_CACHE, else $XDG_CACHE_HOME/mlbpf-vmtest or
//     ~/.cache/mlbpf-vmtest), once per package version; nothing goes into
//     the host's /boot. A Debian package name pins an exact kernel; a .deb
//     file or http(s) URL (say on snapshot.debian.org) pins one on hosts
//     without Debian's apt, needing only dpkg-deb; a path boots any
//     bzImage, with its modules taken from -modules.
//  2. go list finds the packages with tests; go test -c builds each one's
//     test binary, and go build the guest's init (internal/guestinit), all
//     static (CGO_ENABLED=0) for linux/amd64.
//  3. The kernel modules the tests need (-kmods; by default veth,
//     sch_ingress, cls_bpf, act_bpf, act_gact, act_mirred, sch_tbf, sch_fq,
//     tcp_bbr, and the netlink families xfrm_user and nfnetlink, which
//     netlink libraries open up front, and inet_diag, tcp_diag, udp_diag)
//     are looked up in the kernel's module tree with their
//     dependencies, read from each module's .modinfo section since a
//     packaged tree has no modules.dep. Modules built into the kernel
//     (modules.builtin) are skipped; .ko.xz and .ko.zst files (Debian's
//     6.12) are decompressed with xz and zstd, so the guest loads plain
//     .ko files.
//  4. The guest's root file system is written as a newc cpio archive
//     (package initramfs), uncompressed by default since unpacking gzip
//     under TCG costs more than it saves. Its layout is below.
//  5. qemu-system-x86_64 boots the kernel with that initramfs: -machine pc
//     -nodefaults -nographic -no-reboot, the serial port on standard output,
//     2 CPUs, 1 GiB, and the command line "console=ttyS0,115200 panic=-1
//     rdinit=/init edd=off quiet". There is no disk and no network.
//
// The guest's files:
//
//	/init                     the guest init
//	/sbin/modprobe            -> /init, which reports the kernel's requests
//	/bin/busybox, /bin/sh, …  a static busybox (-busybox), if the host has one
//	/dev/console              character device 5:1
//	/vmtest/plan.json         what the init does (package plan)
//	/vmtest/modules/*.ko      the modules, loaded in the plan's order
//	/src/<dir>/<name>.test    each package's test binary, in a copy of its
//	/src/<dir>/testdata/…     directory at its path in the module, with its
//	/src/testdata/…           testdata and that of its parent directories
//
// since tests open testdata and ../testdata relative to their working
// directory.
//
// The guest has no package manager and no shared libraries: tests that
// run host tools other than busybox's shell and basic commands (bpftool,
// iperf3, python) should skip when exec.LookPath does not find them, as
// they would on a host without them. Network tools (ip, tc) are left out
// of busybox's commands on purpose. Kernel modules are loaded at boot
// only; when the kernel asks for another one, /sbin/modprobe prints
// "the kernel asked for module …" on the console, naming what to add to
// -kmods.
//
// In the guest, the init (internal/guestinit) mounts proc, sysfs,
// devtmpfs, devpts, tmpfs on /tmp, /run and /dev/shm, bpffs on
// /sys/fs/bpf, tracefs on /sys/kernel/tracing, debugfs on
// /sys/kernel/debug and cgroup2 on /sys/fs/cgroup; brings up lo; lifts
// RLIMIT_MEMLOCK (which kernels before 5.11 charge BPF maps to); loads the
// modules with finit_module; then runs the test binaries one after the
// other, each with -test.v in its directory, with the console as its
// output. The tests run as separate processes started after the mounts:
// cilium/ebpf reads /proc/self/mountinfo once, the first time it is used,
// even from a package's init. Debian's kernels have BTF
// (/sys/kernel/btf/vmlinux), so CO-RE programs load as on the host.
//
// The init prints marker lines carrying a token drawn at random for the
// run: one when it starts, one with the exit status after each test
// binary, and one at the end, after which it powers the machine off with
// reboot(LINUX_REBOOT_CMD_POWER_OFF). The harness reads the console as it
// arrives (package console), passes the output through, replaces the
// markers by "ok"/"FAIL" lines, and takes the end marker's status as the
// run's.
//
// # Failures
//
// The run passes only if the end marker arrived with status 0. A kernel
// panic (panic=-1 and -no-reboot make qemu exit at once), a machine still
// running at -timeout (the hang is killed), or a machine that stopped
// without the end marker is a failure, reported with the console's last
// 40 lines, or for a panic, BUG or oops the lines around its start (what
// ran, the report, the top of the trace). A kernel BUG or oops during the
// run fails it too, even if the tests passed. -timeout counts from the
// machine's start (the build is not included); the init gives each test
// binary -test.timeout set to the time left (less a margin), so that a
// hung test prints its goroutines before the machine is killed.
//
// # KVM, TCG and virtme-ng
//
// With -accel auto (the default) the harness uses KVM only if qemu boots
// the kernel under KVM and it prints its banner within 5 seconds: having
// /dev/kvm is not enough where KVM is nested (on the mlbpf build machines
// it exists, but qemu aborts with -cpu host and hangs in early boot with
// other CPU models). Otherwise it uses TCG, qemu's emulator, which is
// slower for the tests but boots in seconds.
//
// Under TCG the two virtual CPUs take turns on one host thread
// (-tcg-threads single). With a host thread each (multi), which is faster
// on a host with cores to spare, Debian's 6.12 oopsed in 2 of 26 runs of
// the daemon and CLI tests, on an int3 left behind by its own code
// patching (text_poke_bp, when a tracepoint is attached); with single, in
// none of 26. That points at qemu 7.2's multi-threaded TCG rather than
// the kernel.
//
// With -vng the harness runs virtme-ng (vng) instead of plain qemu: the
// guest sees the host's file systems, the harness writes the same tree
// into its work directory and vng runs the init from there (not as PID 1:
// it then mounts only what is missing and exits with the status). vng
// needs a kernel that can mount the host's file systems, such as one built
// with vng --build; Debian's kernels have 9p and virtiofs as modules and
// need plain qemu.
//
// # Timing
//
// Measured on the mlbpf build machine (2 cores, shared with other work, no
// usable KVM, so TCG): the init starts 4 to 9 seconds after qemu (6.1's
// xz-compressed kernel decompresses more slowly than 6.12's zstd one; a
// bigger initramfs adds a little), and a run of vmtest's own packages
// takes 8 to 17 seconds in all, go run included. The whole suite (19
// packages, about 200 tests) took 2 to 2¼ minutes on either kernel: 17 to
// 30 seconds to build, 6 to 9 to boot and about 100 running the tests,
// half of it the tcp package's traffic. A run is one machine, so a CI job
// testing 6.1 and 6.12 spends about 5 minutes.
//
// Emulated code runs several times slower than on the host, so tests
// with tight deadlines (a few seconds for a TCP exchange) may need more
// slack in a VM; the guest sets VMTEST_GUEST=1 in the tests' environment
// for such a test to check.
//
// # Tests
//
// go test ./vmtest/... checks the cpio writer against its reader, the
// guest tree, the console parser on canned consoles (passes, failing
// tests, exit status, panics, hangs, lost markers), module resolution,
// .deb unpacking (with dpkg-deb) and the qemu command line. The tests that boot a kernel (an init exiting 3,
// an init that panics, one that hangs, and a whole run) take a minute or
// two under TCG and run only with MLBPF_VMTEST_BOOT=1
// (MLBPF_VMTEST_KERNEL picks the kernel, default 6.1).
package main
