#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for mlbpf. Idempotent; run as root.
#
#   setup.sh run    mounts bpffs, tracefs and cgroup2 where absent: all the
#                   daemon needs (its BPF objects are committed, prebuilt)
#   setup.sh [test] also installs the packages the build, the tests, the
#                   benchmarks and the VM tests need (only those missing)
set -euo pipefail

purpose=${1:-test}
case $purpose in
run | test) ;;
*)
	echo "usage: $0 [run|test]" >&2
	exit 2
	;;
esac

if [[ $(id -u) -ne 0 ]]; then
	echo "setup: run as root (sudo $0): installs packages and mounts bpffs" >&2
	exit 1
fi

if [[ $purpose == test ]]; then
	# podman, runc, catatonit: the container tests (deploy/) run the image
	# with runc (crun refuses a hybrid cgroup hierarchy) and 'podman kube
	# play' the DaemonSet's pod (catatonit is its pause process); the pod
	# network is podman's CNI bridge, which uses iptables.
	packages=(clang-19 llvm-19 bpftool libbpf-dev iperf3 iproute2 qemu-system-x86 udev dpkg xz-utils python3-pandas systemd util-linux nats-server prometheus e2fsprogs podman runc catatonit iptables tmux)
	missing=()
	packages+=(chromium) # headless, for the report's test (cmd/mlbpf TestReport, internal/headless)
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		echo "setup: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi

	# virtme-ng (vng) runs `make vmtest`. Distributions that package it get
	# theirs; Debian 12 does not, so it gets Debian 13's: virtme-ng is pure
	# Python (architecture all) and its dependencies are all in Debian 12.
	# Only that one package comes from Debian 13, fetched with a temporary
	# sources list; apt resolves its dependencies from the host's suites.
	# (vng's guest runs the host's udevd, hence udev above.)
	if ! command -v vng >/dev/null; then
		export DEBIAN_FRONTEND=noninteractive
		if [[ -n $(apt-cache policy virtme-ng 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)"') ]]; then
			echo "setup: installing virtme-ng"
			apt-get install -y -qq --no-install-recommends virtme-ng >/dev/null
		elif [[ $(. /etc/os-release && echo "$ID $VERSION_ID") == "debian 12" ]]; then
			echo "setup: installing virtme-ng from Debian 13 (trixie): Debian 12 has no package"
			tmp=$(mktemp -d)
			chmod 755 "$tmp" # apt-get writes as _apt where it can
			trap 'rm -rf "$tmp"' EXIT
			mkdir -p "$tmp/lists/partial"
			echo "deb http://deb.debian.org/debian trixie main" >"$tmp/sources.list"
			apt_trixie=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
				-o Dir::State::Lists="$tmp/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
			apt-get "${apt_trixie[@]}" update -qq
			(cd "$tmp" && apt-get "${apt_trixie[@]}" download -qq virtme-ng)
			apt-get install -y -qq --no-install-recommends "$tmp"/virtme-ng_*_all.deb >/dev/null
		else
			echo "setup: no virtme-ng package here: install it (pip install virtme-ng) for make vmtest" >&2
		fi
		! command -v vng >/dev/null || vng --version
	fi

	# The storage testbed's loop devices.
	if [[ ! -e /dev/loop-control ]]; then
		echo "setup: loading the loop driver"
		modprobe loop || echo "setup: no loop driver: the storage/readahead tests will say so" >&2
	fi
	# The storage testbed's disk (a FUSE server charging seek + transfer).
	if [[ ! -e /dev/fuse ]]; then
		echo "setup: loading fuse"
		modprobe fuse || echo "setup: no FUSE: the storage testbed's disk tests will say so" >&2
	fi
fi # test

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	echo "setup: go is at /usr/local/go/bin; add it to PATH" >&2
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

if [[ $purpose == test ]]; then
	# Every test's sockets pass through the sock_ops programs attached to the
	# cgroup v2 root too: say which, so that a failure can be told apart
	# from one of them (an older mlbpf's pins, left by 'mlbpf run').
	cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	if attached=$(bpftool cgroup show "$cg2" 2>/dev/null | awk '$2 == "cgroup_sock_ops" || $2 == "sock_ops" { print "  " $0 }') &&
		[[ -n $attached ]]; then
		echo "setup: sock_ops programs on the cgroup v2 root ($cg2) see every test's sockets:"
		echo "$attached"
		if [[ -d /sys/fs/bpf/mlbpf ]]; then
			echo "setup: mlbpf's pins are in /sys/fs/bpf/mlbpf; if an older build left them, remove them: go run ./cmd/mlbpf rollback"
		fi
	fi
fi
