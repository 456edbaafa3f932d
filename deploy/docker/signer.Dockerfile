# syntax=docker/dockerfile:1
# The Custos signer node (custos-signer) and the custos CLI (for the unseal
# ceremony through `kubectl exec` / `docker exec`). Build from the repository
# root:
#
#   docker build -f deploy/docker/signer.Dockerfile -t custos-signer .
#
# Run with a read-only root filesystem: the config (signer.toml, the
# certificates, the policy and admin files) is a read-only volume at
# /etc/custos, everything the node writes (sealed shares, witness state, its
# key files, which it seals in place at first start, the unseal socket) is the
# volume at /var/lib/custos, owned by uid 10001:
#
#   docker run --read-only --tmpfs /tmp \
#     --cap-drop ALL --security-opt no-new-privileges \
#     -v /srv/custos/signer-1/etc:/etc/custos:ro \
#     -v /srv/custos/signer-1/data:/var/lib/custos \
#     -p 7410:7410 -p 7510:7510 \
#     custos-signer
#
# signer.toml must set data_dir = "/var/lib/custos", keep identity_key and
# tls.key under it (they are sealed in place), and listen on 0.0.0.0 (control
# 7410, libp2p 7510, metrics 7610). A PKCS#11 sealer needs the HSM vendor's
# module: derive an image that adds it (SoftHSM2 is for tests only and is not
# installed here).
#
# No HEALTHCHECK: the image carries no HTTP client (no curl, no shell needed),
# so nothing inside it can fetch /healthz. Orchestrators probe it from outside
# (the Kubernetes manifests in deploy/kubernetes use httpGet on the metrics
# port 7610: readiness on /healthz, which answers 503 while sealed).

FROM rust:1.95.0-bookworm AS builder
# The toolchain of rust-toolchain.toml, without fetching its extra components.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p custos-signer-node --bin custos-signer \
        -p custos-cli --bin custos \
    && install -D -m 0755 target/release/custos-signer /out/bin/custos-signer \
    && install -D -m 0755 target/release/custos /out/bin/custos \
    && install -d -m 0700 /out/data

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="custos-signer" \
      org.opencontainers.image.description="Custos threshold signer node" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/bin/ /usr/local/bin/
COPY --from=builder --chown=10001:10001 /out/data /var/lib/custos
USER 10001:10001
WORKDIR /var/lib/custos
ENV CUSTOS_SIGNER_CONFIG=/etc/custos/signer.toml
VOLUME ["/var/lib/custos"]
# control gRPC (mTLS, from the coordinators), libp2p (the other signers),
# /healthz and /metrics (plain HTTP, from monitoring).
EXPOSE 7410 7510 7610
HEALTHCHECK NONE
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/custos-signer", "--log-json"]
