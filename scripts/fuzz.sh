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

# shellcheck disable=SC2086 # FUZZ_PKGS may hold several patterns
for pkg in $(go list $pkgs); do
	targets=$(go test -list '^Fuzz' "$pkg" | grep -E '^Fuzz' | grep -E -- "$match" || true)
	for target in $targets; do
		echo "=== $pkg $target ($fuzztime)"
		ran=$((ran + 1))
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			failed+=("$pkg $target")
		fi
	done
done

echo
echo "fuzz: $ran target(s) in $((SECONDS - start))s"
if [ "$ran" -eq 0 ]; then
	echo "fuzz: no target matched (FUZZ_PKGS=$pkgs FUZZ_MATCH=$match)" >&2
	exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: ok"
