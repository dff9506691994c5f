#!/usr/bin/env bash
# Build the Debian package into DIR (default dist): mlbpf_<version>_<arch>.deb
# with the static binary, /etc/mlbpf/mlbpf.yaml (the embedded default, a
# conffile), the systemd unit, bash and zsh completion and mlbpf(8), all
# generated from the binary itself. Needs go and dpkg-deb; not root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0)}
version=${version#v}
[[ $version =~ ^[0-9] ]] || version="0.0~git${version}" # Debian versions start with a digit
version=${version//-/+}
arch=$(go env GOARCH)

root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/mlbpf" "$root/lib/systemd/system" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/man/man8" "$root/usr/share/doc/mlbpf"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=$version" -o "$root/usr/bin/mlbpf" ./cmd/mlbpf
bin="$root/usr/bin/mlbpf"
"$bin" config default >"$root/etc/mlbpf/mlbpf.yaml"
"$bin" completion bash >"$root/usr/share/bash-completion/completions/mlbpf"
"$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_mlbpf"
"$bin" __man | gzip -9n >"$root/usr/share/man/man8/mlbpf.8.gz"
install -m 644 packaging/deb/mlbpf.service "$root/lib/systemd/system/mlbpf.service"
install -m 755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/mlbpf/mlbpf.yaml >"$root/DEBIAN/conffiles"
printf 'mlbpf, built from https://github.com/mlbpf/mlbpf at %s.\n' "$version" >"$root/usr/share/doc/mlbpf/README.Debian"
chmod 644 "$root/etc/mlbpf/mlbpf.yaml" "$root"/usr/share/*/*/* "$root/usr/share/man/man8/mlbpf.8.gz" 2>/dev/null || true
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/deb/control >"$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/mlbpf_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
