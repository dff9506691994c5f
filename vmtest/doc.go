// Command vmtest runs mlbpf's Go tests as root inside a virtual machine
// booting another kernel, with virtme-ng (vng), so that the BPF code is
// tested on the kernels users run (Debian's 6.1 and 6.12) and not only
// on the host's.
//
// Usage:
//
//	go run ./vmtest [-kernel 6.1|6.12|linux-image-…|….deb|URL of a .deb|bzImage|kernel tree]
//	                [-pkgs ./...] [-run regexp] [-timeout 20m] [-accel auto|kvm|tcg] [-v]
//	                [-- test binary flags]
//
// For example:
//
//	go run ./vmtest -kernel 6.1 -pkgs ./loader,./ringbuf
//	go run ./vmtest -kernel 6.12 -run 'TestPin|TestRing'
//	go run ./vmtest -kernel 6.1 -- -test.count=2 -test.short
//
// It prints the tests' output as it comes (go test -v, with an "ok" or
// "FAIL" line per package) and exits with their status: 0 when every
// package passed, else the exit status of the first failing test binary;
// 1 when the machine did not finish (see Failures); 2 for a bad flag.
//
// # How it works
//
//  1. The kernel is resolved (package kernel). "6.1" and "6.12" name
//     Debian's meta-packages linux-image-amd64 and linux-image-6.12-amd64;
//     apt-cache follows them to the newest image package, apt-get download
//     fetches it and dpkg-deb -x unpacks it into the cache directory
//     ($MLBPF_VMTEST_CACHE, else $XDG_CACHE_HOME/mlbpf-vmtest or
//     ~/.cache/mlbpf-vmtest), once per package version; nothing goes into
//     the host's /boot. A Debian package name pins an exact kernel; a .deb
//     file or http(s) URL (say on snapshot.debian.org) pins one on hosts
//     without Debian's apt. Anything else goes to vng --run as it is: a
//     bzImage, or a kernel tree built with vng --build.
//  2. go list finds the packages with tests and go test -c builds each
//     one's test binary on the host, static (CGO_ENABLED=0), into a work
//     directory that also gets guest.sh (embedded here) and its plan.
//  3. vng boots the kernel on a snapshot of the host's file systems
//     (9p, read-only, with vng's overlays on /etc, /tmp, /var, … and one
//     on each tested module's directory) and runs guest.sh as root in it.
//     vng finds the kernel's own modules in lib/modules beside the
//     unpacked package (running depmod there once) and puts the ones
//     its guest needs in its initramfs; the guest's modprobe loads the
//     rest. The kernel's console goes to vng's standard error (--verbose),
//     the script's output to its standard output, and the script's exit
//     status becomes vng's.
//  4. guest.sh mounts bpffs, tracefs and debugfs where vng has not, and
//     cgroup2 on /sys/fs/cgroup; lifts RLIMIT_MEMLOCK; loads the modules
//     the tests use (-kmods); then copies each test binary to a tmpfs
//     (9p would read it from the host at every exec) and runs it with
//     -test.v in its package's directory, so that testdata is where the
//     tests look, temporary files on that tmpfs,
//     with VMTEST_GUEST=1 in its environment, and -test.timeout set to the
//     time left. It prints "ok"/"FAIL" per package and exits with the
//     first failure's status.
//
// # Failures
//
// The run passes only if vng exits 0 and the kernel's console shows no
// panic, BUG or oops. A kernel panic (vng passes panic=-1 and qemu
// -no-reboot: the machine stops, vng exits 255), a machine still running
// at -timeout (vng and its qemu are killed), or a BUG or oops during the
// run is a failure, reported with the console's last 40 lines, or the
// lines around the first panic, BUG or oops. -timeout counts from the
// machine's start (the build is not included); each test binary's
// -test.timeout ends a little earlier, so that a hung test prints its
// goroutines before the machine is killed.
//
// # KVM and TCG
//
// With -accel auto (the default) the harness uses KVM only if qemu boots
// the kernel under KVM with -cpu host, as vng would, and it prints its
// banner within 5 seconds: having /dev/kvm is not enough where KVM is
// nested (on the mlbpf build machines it exists, but qemu aborts setting
// an MSR). Otherwise vng runs with --disable-kvm, under TCG, qemu's
// emulator, with -cpu max and one host thread for both virtual CPUs
// (-accel tcg,thread=single through --qemu-opts): with a host thread each,
// Debian's 6.12 oopsed in 2 of 26 runs of the daemon and CLI tests, on an
// int3 left behind by its own text patching, and in none of 26 with one.
//
// # Timing
//
// On the mlbpf build machine (2 cores shared with other work, TCG), vng
// boots Debian's 6.1 to the guest script in about 20 seconds and the run
// of one small package takes 40 to 55 seconds in all, go run and build
// included.
//
// # Tests
//
// go test ./vmtest/... checks the flags, vng's command line, the guest's
// plan, the console's tail and incident capture, and the kernel
// resolution (.deb unpacking with dpkg-deb). The tests that boot a kernel
// (a passing package, a test binary exiting 3, a kernel panic, a hang,
// with the fixture in testdata/fixture) take a few minutes under TCG and
// run only with MLBPF_VMTEST_BOOT=1 (MLBPF_VMTEST_KERNEL picks the kernel,
// default 6.1).
package main
