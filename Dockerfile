# One image for Kubernetes mode: weftd (the control plane), weft-proxy (the
# sidecar and gateway) and weft (whose `intercept` subcommand is the
# injected init container, and `wait-proxy` the classic sidecar's hold).
#
#   docker build -t ghcr.io/weft-mesh/weft:0.1.0 .
#
# Not built in CI: no container registry is reachable from the CI machines
# (see docs/kubernetes.md). The image name is weft_kube::inject::default_image().

FROM rust:1.95-bookworm AS build
# aws-lc-rs (TLS) builds its C part with cmake and clang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-control -p weft-proxy -p weft-cli \
 && install -D -m 0755 target/release/weftd target/release/weft-proxy target/release/weft -t /out

FROM debian:bookworm-slim
# iptables-restore for `weft intercept` (nft backend, Debian's default; the
# same tool `weft up` runs); ca-certificates for the Kubernetes API.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 weft \
 && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin weft
COPY --from=build /out/ /usr/local/bin/
# weftd and weft-proxy run as 1337 (the UID interception leaves alone);
# the injected weft-init container overrides this with root + NET_ADMIN.
USER 1337:1337
ENTRYPOINT []
CMD ["weftd", "--help"]
