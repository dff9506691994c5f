#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for mlbpf: installs the packages the build,
# tests and benchmarks need (only those missing), and mounts bpffs, tracefs
# and cgroup2 where absent. Idempotent; run as root.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
	echo "setup: run as root (sudo $0): installs packages and mounts bpffs" >&2
	exit 1
fi

packages=(clang-19 llvm-19 bpftool libbpf-dev iperf3 iproute2 qemu-system-x86 busybox-static dpkg xz-utils e2fsprogs)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	echo "setup: go is at /usr/local/go/bin; add it to PATH" >&2
fi

# The storage testbed's loop devices.
if [[ ! -e /dev/loop-control ]]; then
	echo "setup: loading the loop driver"
	modprobe loop || echo "setup: no loop driver: the storage/readahead tests will say so" >&2
fi

mounted() { awk -v m="$1" -v t="$2" '$2 == m && $3 == t { f = 1 } END { exit !f }' /proc/mounts; }

if ! mounted /sys/fs/bpf bpf; then
	echo "setup: mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
if ! mounted /sys/kernel/tracing tracefs; then
	echo "setup: mounting tracefs on /sys/kernel/tracing"
	mount -t tracefs tracefs /sys/kernel/tracing
fi
if ! awk '$3 == "cgroup2" { f = 1 } END { exit !f }' /proc/mounts; then
	if awk '$2 == "/sys/fs/cgroup" { f = 1 } END { exit !f }' /proc/mounts; then
		mkdir -p /sys/fs/cgroup/unified
		echo "setup: mounting cgroup2 on /sys/fs/cgroup/unified"
		mount -t cgroup2 none /sys/fs/cgroup/unified
	else
		echo "setup: mounting cgroup2 on /sys/fs/cgroup"
		mount -t cgroup2 none /sys/fs/cgroup
	fi
fi
