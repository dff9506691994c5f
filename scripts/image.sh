#!/usr/bin/env bash
# Build the mlbpf container image with podman: FROM scratch, the static
# binary (CGO_ENABLED=0) and its embedded default configuration as
# /etc/mlbpf/mlbpf.yaml (packaging/container/Containerfile). Tags
# localhost/mlbpf:<version> and localhost/mlbpf:latest, or the tag given:
#
#   scripts/image.sh [TAG]
#
# PODMAN (default: podman) may carry podman's global options, e.g.
# PODMAN="podman --root DIR --runroot DIR" to build into other storage.
# Nothing is fetched from a registry. Prints the tag built.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0)}
version=${version#v}
tag=${1:-localhost/mlbpf:$version}
PODMAN=${PODMAN:-podman}
if ! command -v "${PODMAN%% *}" >/dev/null; then
	echo "image: needs podman: apt-get install podman runc (or sudo make setup)" >&2
	exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=$version" -o "$ctx/mlbpf" ./cmd/mlbpf
"$ctx/mlbpf" config default >"$ctx/mlbpf.yaml"
chmod 755 "$ctx/mlbpf"
chmod 644 "$ctx/mlbpf.yaml"
cp packaging/container/Containerfile "$ctx/Containerfile"
tags=(-t "$tag")
[[ $# -gt 0 ]] || tags+=(-t localhost/mlbpf:latest)
# shellcheck disable=SC2086 # PODMAN is a command with its options
$PODMAN build --quiet --pull=never --layers=false "${tags[@]}" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$tag"
