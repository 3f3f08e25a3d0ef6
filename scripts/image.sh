#!/usr/bin/env bash
# brindle's image, built without a container engine: the static binaries
# (brindle, brindle-ipam, brindled, brindlectl and the reference portmap
# for hostPort) in /usr/local/bin of a one-layer image, written as an image
# archive that `ctr images import`, `docker load -i` and `kind load
# image-archive` read. The test cluster (test/k8s), kind (test/kind) and
# `make image` all use this one definition; conf/k8s runs it.
#
# Usage: scripts/image.sh OUT.tar [TAG]   (after `make build refplugins`)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: image.sh OUT.tar [TAG]}
tag=${2:-ghcr.io/brindle-net/brindle:dev}
bin=${BIN:-$root/bin}
version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)

for b in brindle brindle-ipam brindled brindlectl portmap; do
	[ -x "$bin/$b" ] || { echo "image: $bin/$b is missing (make build refplugins)" >&2; exit 1; }
done
mkimage=$bin/mkimage
if [ ! -x "$mkimage" ] || [ "$root/test/k8s/tools/mkimage/main.go" -nt "$mkimage" ]; then
	(cd "$root/test/k8s/tools/mkimage" && CGO_ENABLED=0 go build -trimpath -o "$mkimage" .)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/etc/ssl/certs" "$work/rootfs/tmp"
chmod 1777 "$work/rootfs/tmp"
for b in brindle brindle-ipam brindled brindlectl portmap; do
	install -m 0755 "$bin/$b" "$work/rootfs/usr/local/bin/$b"
done
# What distroless/static gives: root's passwd entry and CA certificates (for
# an etcd with a public CA's certificate).
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$work/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$work/rootfs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
	cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"
fi
tar --numeric-owner --owner=0 --group=0 --mtime=2026-01-01 --sort=name -C "$work/rootfs" -cf "$work/layer.tar" .
"$mkimage" -o "$out" -tag "$tag" -layer "$work/layer.tar" \
	-entrypoint '["/usr/local/bin/brindled"]' \
	-label org.opencontainers.image.title=brindle \
	-label "org.opencontainers.image.description=Kubernetes CNI with a routed (BGP) dataplane" \
	-label org.opencontainers.image.source=https://github.com/brindle-net/brindle \
	-label org.opencontainers.image.licenses=Apache-2.0 \
	-label "org.opencontainers.image.version=$version"
echo "image: $tag -> $out ($(du -m "$out" | cut -f1) MB)" >&2
