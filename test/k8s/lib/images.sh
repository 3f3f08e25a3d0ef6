# The images the cluster and the e2e suite run (sourced), built here under
# their exact upstream names so that no node ever asks a registry for one.
# Each is an image archive in $K8S_IMAGES, built once and kept.
#
# The test images share one base layer: a Debian bookworm rootfs
# (debootstrap --variant=minbase) with what the tests exec in them: sh and
# bash, curl, wget, nc (netcat-openbsd), dig and nslookup (dnsutils), ip,
# ping, ps, nginx, busybox, conntrack and iptables. Upstream's are Alpine or Debian images with
# the same tools; ours are not byte-for-byte theirs, only what the tests use.
# shellcheck shell=bash

ROOTFS_PACKAGES=bash,curl,netcat-openbsd,dnsutils,iproute2,iputils-ping,procps,wget,busybox-static,ca-certificates,nginx-light,conntrack,iptables

# The rootfs is named for its package list: a change to the list makes a new one.
ROOTFS_ID=bookworm-$(echo "$ROOTFS_PACKAGES" | sha1sum | cut -c1-8)

rootfs_layer() {
	local r=$BRINDLE_K8S_CACHE/rootfs/$ROOTFS_ID layer=$BRINDLE_K8S_CACHE/layers/$ROOTFS_ID.tar.gz
	[ -f "$layer" ] && return 0
	if [ ! -d "$r" ]; then
		command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-deps.sh k8s)"
		log "debootstrap bookworm for the test images (a few minutes, once)"
		rm -rf "$r.tmp"
		debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$r.tmp" http://deb.debian.org/debian >"$BRINDLE_K8S_CACHE/debootstrap.log" 2>&1 ||
			die "debootstrap failed: $BRINDLE_K8S_CACHE/debootstrap.log"
		mv "$r.tmp" "$r"
	fi
	mkdir -p "$(dirname "$layer")"
	# No package caches, no resolv.conf or hostname of this machine's.
	rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*
	: >"$r/etc/resolv.conf"
	echo localhost >"$r/etc/hostname"
	# Users upstream's agnhost image defines (security-context tests).
	grep -q user-defined-in-image "$r/etc/passwd" ||
		chroot "$r" sh -c 'groupadd -g 50000 group-defined-in-image && useradd -u 1000 -M -G group-defined-in-image user-defined-in-image'
	# Compressed once here, so that each image that shares it does not
	# compress it again.
	tar --numeric-owner --sort=name --mtime=2026-01-01 -C "$r" -cf - . | gzip -n -1 >"$layer.tmp" && mv "$layer.tmp" "$layer"
}

# layer NAME: an empty staging directory for a small layer; pack NAME tars it.
layer() { rm -rf "${W:?}/$1"; mkdir -p "$W/$1"; echo "$W/$1"; }
pack() { tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=2026-01-01 -C "$W/$1" -cf "$W/$1.tar" .; echo "$W/$1.tar"; }

# image FILE TAG MKIMAGE-ARGS...: build FILE unless it is there and newer
# than the base layer and this script.
image() {
	local file=$K8S_IMAGES/$1.tar tag=$2; shift 2
	[ -f "$file" ] && [ "$file" -nt "$BRINDLE_K8S_CACHE/layers/$ROOTFS_ID.tar.gz" ] && [ "$file" -nt "${BASH_SOURCE[0]}" ] && return 0
	log "image $tag"
	"$K8S_BIN/mkimage" -o "$file" -tag "$tag" "$@"
}

images_build() {
	mkdir -p "$K8S_IMAGES"
	local base=$BRINDLE_K8S_CACHE/layers/$ROOTFS_ID.tar.gz d M
	W=$(mktemp -d)
	# shellcheck disable=SC2064
	trap "rm -rf '$W'" RETURN
	rootfs_layer
	M=$(cd "$HERE" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)

	d=$(layer pause); install -m 0755 "$K8S_BIN/pause" "$d/pause"
	image pause registry.k8s.io/pause:3.10.1 -layer "$(pack pause)" -entrypoint '["/pause"]'

	d=$(layer agnhost)
	install -m 0755 "$K8S_BIN/agnhost" "$d/agnhost"; ln -s agnhost "$d/agnhost-2"
	install -m 0755 "$K8S_BIN/coredns" "$d/coredns"
	install -m 0644 "$M/test/images/agnhost/porter/localhost.crt" "$M/test/images/agnhost/porter/localhost.key" "$d/"
	mkdir -p "$d/uploads"
	image agnhost registry.k8s.io/e2e-test-images/agnhost:2.56 -layer "$base" -layer "$(pack agnhost)" \
		-entrypoint '["/agnhost"]' -cmd '["pause"]'

	d=$(layer dnsutils); install -m 0755 "$K8S_BIN/coredns" "$d/coredns"
	image jessie-dnsutils registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7 -layer "$base" -layer "$(pack dnsutils)"

	# nginx from Debian, serving its default page on port 80 as upstream's.
	d=$(layer nginx); mkdir -p "$d/etc/nginx/sites-enabled" "$d/usr/share/nginx/html"
	cat >"$d/etc/nginx/sites-enabled/default" <<-'EOF'
		server {
			listen 80 default_server;
			listen [::]:80 default_server;
			root /usr/share/nginx/html;
			index index.html;
		}
	EOF
	echo '<html><body><h1>Welcome to nginx!</h1></body></html>' >"$d/usr/share/nginx/html/index.html"
	local tag
	for tag in 1.14-4 1.15-4; do
		image "nginx-$tag" "registry.k8s.io/e2e-test-images/nginx:$tag" -layer "$base" -layer "$(pack nginx)" \
			-entrypoint '["nginx", "-g", "daemon off;"]'
	done

	# busybox: the static busybox and its applets, nothing else.
	d=$(layer busybox); mkdir -p "$d/bin" "$d/tmp" "$d/etc"; chmod 1777 "$d/tmp"
	install -m 0755 "$BRINDLE_K8S_CACHE/rootfs/$ROOTFS_ID/bin/busybox" "$d/bin/busybox"
	local a
	for a in $("$d/bin/busybox" --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$d/etc/passwd"
	printf 'root:x:0:\nnobody:x:65534:\n' >"$d/etc/group"
	for tag in 1.36.1-1 1.37.0-1; do
		image "busybox-$tag" "registry.k8s.io/e2e-test-images/busybox:$tag" -layer "$(pack busybox)" -cmd '["sh"]'
	done

	# httpd: upstream's is Apache; this is busybox's httpd on port 80 with
	# the same entry point name, enough for tests that only need a server.
	d=$(layer httpd); mkdir -p "$d/usr/local/bin" "$d/usr/local/apache2/htdocs"
	echo '<html><body><h1>It works!</h1></body></html>' >"$d/usr/local/apache2/htdocs/index.html"
	printf '#!/bin/sh\nexec busybox httpd -f -p 80 -h /usr/local/apache2/htdocs\n' >"$d/usr/local/bin/httpd-foreground"
	chmod 0755 "$d/usr/local/bin/httpd-foreground"
	for tag in 2.4.38-4 2.4.39-4; do
		image "httpd-$tag" "registry.k8s.io/e2e-test-images/httpd:$tag" -layer "$base" -layer "$(pack httpd)" \
			-cmd '["httpd-foreground"]'
	done

	# The privileged host tools image of the kube-proxy tests: sh, conntrack,
	# iptables (upstream's is distroless with the same tools).
	image distroless-iptables registry.k8s.io/build-image/distroless-iptables:v0.7.14 -layer "$base"

	# The conntrack test's raw-socket client (its source says 1.3; the suite
	# names 1.2).
	d=$(layer r74839); install -m 0755 "$K8S_BIN/regression-issue-74839" "$d/regression-issue-74839"
	image regression-issue-74839 registry.k8s.io/e2e-test-images/regression-issue-74839:1.2 -layer "$(pack r74839)" \
		-entrypoint '["/regression-issue-74839"]'

	d=$(layer coredns); install -m 0755 "$K8S_BIN/coredns" "$d/coredns"
	mkdir -p "$d/etc/ssl/certs"; cp /etc/ssl/certs/ca-certificates.crt "$d/etc/ssl/certs/" 2>/dev/null || true
	image coredns "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" -layer "$(pack coredns)" -entrypoint '["/coredns"]'

	# brindle's optional etcd (conf/k8s/etcd) runs this image.
	d=$(layer etcd); mkdir -p "$d/usr/local/bin" "$d/var/lib/etcd" "$d/tmp"; chmod 1777 "$d/tmp"
	install -m 0755 "$K8S_BIN/etcd" "$d/usr/local/bin/etcd"
	image etcd quay.io/coreos/etcd:v3.6.5 -layer "$(pack etcd)" -entrypoint '["/usr/local/bin/etcd"]'
}
