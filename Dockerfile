# syntax=docker/dockerfile:1
# brindle's image: the CNI plugins (brindle, brindle-ipam, and portmap for
# hostPort), the node daemon brindled and brindlectl (which also installs
# the CNI on each node), all static. conf/k8s/ runs it.
#
#   docker build -t ghcr.io/brindle-net/brindle:dev --build-arg VERSION=$(git describe --always) .
#
# Nothing else is needed at run time: brindled programs routes, links and
# nftables through netlink from Go, and runs no iptables, ip or modprobe.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# portmap comes from the containernetworking/plugins version pinned in
# go.mod, like `make refplugins`.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    export CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} && \
    go build -trimpath -ldflags "-s -w -X github.com/brindle-net/brindle/internal/buildinfo.Version=${VERSION}" \
        -o /out/ ./cmd/brindle ./cmd/brindle-ipam ./cmd/brindled ./cmd/brindlectl && \
    go build -trimpath -ldflags "-s -w" -o /out/ github.com/containernetworking/plugins/plugins/meta/portmap

# distroless/static: CA certificates, /etc/passwd, tzdata, no shell. It runs
# as root, which brindled needs (the DaemonSet makes it privileged).
FROM gcr.io/distroless/static-debian12
ARG VERSION=dev
LABEL org.opencontainers.image.title="brindle" \
      org.opencontainers.image.description="Kubernetes CNI with a routed (BGP) dataplane" \
      org.opencontainers.image.source="https://github.com/brindle-net/brindle" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/brindled"]
