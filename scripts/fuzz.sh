#!/usr/bin/env bash
# Runs every fuzz target of the module (go test -fuzz), each for a bounded
# time, one after the other, and fails if any finds an input that breaks
# it. Targets that load BPF need root (as the rest of the suite).
#
#   scripts/fuzz.sh                            # every target, 10s each
#   FUZZTIME=1m scripts/fuzz.sh                # longer
#   FUZZ_PKGS=./agent scripts/fuzz.sh          # one package (go list patterns)
#   FUZZ_MATCH='Recommend' scripts/fuzz.sh     # targets whose name matches
#
# Seeds are the f.Add calls and the files under each package's
# testdata/fuzz/<Target>/ (plain `go test` runs them all). An input that
# fails is written there by go test: fix the bug, keep the file as a
# regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

fuzztime=${FUZZTIME:-10s}
pkgs=${FUZZ_PKGS:-./...}
match=${FUZZ_MATCH:-.}
start=$SECONDS
failed=()
ran=0
flaked=()

# fuzz_one PKG TARGET: fuzz one target for $fuzztime. A failure counts
# when go test wrote a failing input (a new file under the package's
# testdata/fuzz/TARGET/) or said anything but Go 1.26's coordinator race:
# at the end of a duration -fuzztime the coordinator can report its own
# deadline, "context deadline exceeded", as the target's failure with no
# input at all (golang/go#75804, fixed in Go 1.27). That one is run again
# once, and a second such ending is reported as a flake, not a finding.
fuzz_one() {
	local pkg=$1 target=$2 dir out attempt before after
	dir=$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$target
	for attempt in 1 2; do
		before=$(ls "$dir" 2>/dev/null | sort || true)
		out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1) && { echo "$out" | tail -3; return 0; }
		echo "$out"
		after=$(ls "$dir" 2>/dev/null | sort || true)
		if [ "$before" != "$after" ] || ! grep -q '^    context deadline exceeded$' <<<"$out" || grep -q 'Failing input written' <<<"$out"; then
			return 1
		fi
		echo "fuzz: $target ended on the fuzz coordinator's own deadline with no failing input (golang/go#75804); attempt $attempt"
	done
	flaked+=("$pkg $target")
	return 0
}

# shellcheck disable=SC2086 # FUZZ_PKGS may hold several patterns
for pkg in $(go list $pkgs); do
	targets=$(go test -list '^Fuzz' "$pkg" | grep -E '^Fuzz' | grep -E -- "$match" || true)
	for target in $targets; do
		echo "=== $pkg $target ($fuzztime)"
		ran=$((ran + 1))
		fuzz_one "$pkg" "$target" || failed+=("$pkg $target")
	done
done

echo
echo "fuzz: $ran target(s) in $((SECONDS - start))s"
if [ "$ran" -eq 0 ]; then
	echo "fuzz: no target matched (FUZZ_PKGS=$pkgs FUZZ_MATCH=$match)" >&2
	exit 1
fi
if [ "${#flaked[@]}" -gt 0 ]; then
	printf 'fuzz: coordinator deadline twice, no failing input (golang/go#75804): %s\n' "${flaked[@]}" >&2
fi
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: ok"
