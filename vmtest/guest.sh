#!/bin/bash
# Runs inside the virtme-ng guest (vng --exec), as root, on a snapshot of
# the host's file systems. Written by vmtest next to the test binaries.
#
# Usage: guest.sh PLAN DEADLINE MODULES [test binary flags...]
#   PLAN      lines "import path<TAB>package directory<TAB>test binary"
#   DEADLINE  guest uptime in seconds by which the tests must be done
#   MODULES   comma-separated kernel modules to load first
#
# Prints the tests' output (go test -v) with an ok/FAIL line per package,
# and exits with the first failing binary's status, 0 if all passed.
exec 2>&1
plan=$1 deadline=$2 modules=$3
shift 3
# The guest's root is read-only but for vng's overlays on the host's
# directories (/tmp among them), slow under TCG: the tests' temporary
# files go to a tmpfs of their own.
scratch=/run/vmtest
mkdir -p $scratch && mount -t tmpfs -o mode=1777 tmpfs $scratch && mkdir $scratch/home
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=$scratch/home TMPDIR=$scratch VMTEST_GUEST=1

echo "vmtest: guest kernel $(uname -r), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime)s"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
grep -q '^cgroup2 /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup
ulimit -l unlimited
# The guest kernel's configuration, for BPF objects reading CONFIG_*
# values: the shared /boot holds the host kernel's.
if [[ -f ${plan%/*}/kconfig && ! -e /boot/config-$(uname -r) && ! -e /proc/config.gz ]]; then
	mount -t tmpfs -o mode=755 tmpfs /boot && cp "${plan%/*}/kconfig" "/boot/config-$(uname -r)"
fi
if [[ -n $modules ]]; then
	for m in ${modules//,/ }; do
		modprobe "$m" 2>/dev/null || missing+=" $m"
	done
	[[ -z ${missing:-} ]] || echo "vmtest: modules not loaded (not in this kernel?):$missing"
fi

status=0
while IFS=$'\t' read -r pkg dir bin; do
	left=$(awk -v d="$deadline" '{ printf "%d", d - $1 }' /proc/uptime)
	if ((left <= 0)); then
		echo "FAIL	$pkg	(not run: the deadline passed)"
		((status)) || status=1
		continue
	fi
	start=$EPOCHREALTIME
	# Run from the tmpfs: 9p (cache=none) would read the binary from
	# the host again on every exec, and tests re-exec themselves.
	local_bin=$scratch/${bin##*/}
	cp "$bin" "$local_bin" &&
		(cd "$dir" && "$local_bin" -test.v -test.paniconexit0 -test.timeout="${left}s" "$@" </dev/null)
	st=$?
	rm -f "$local_bin"
	secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
	if ((st == 0)); then
		echo "ok  	$pkg	${secs}s"
	else
		echo "FAIL	$pkg	${secs}s (exit status $st)"
		((status)) || status=$st
	fi
done <"$plan"
exit $status
