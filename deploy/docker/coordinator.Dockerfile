# syntax=docker/dockerfile:1
# The Custos coordinator (custos-coordinator) and the custos CLI (for the
# log key's unseal ceremony through `kubectl exec` / `docker exec`). Build
# from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t custos-coordinator .
#
# Run with a read-only root filesystem: the config (coordinator.toml, the
# certificates, the policy, the API token store) is a read-only volume at
# /etc/custos, everything the coordinator writes (its sealed log key and TLS
# keys, the SQLite database when no PostgreSQL is configured, the unseal
# socket) is the volume at /var/lib/custos, owned by uid 10001:
#
#   docker run --read-only --tmpfs /tmp \
#     --cap-drop ALL --security-opt no-new-privileges \
#     -v /srv/custos/coordinator/etc:/etc/custos:ro \
#     -v /srv/custos/coordinator/data:/var/lib/custos \
#     -e CUSTOS_DATABASE_URL=postgres://custos@db.internal/custos \
#     -p 7400:7400 -p 7401:7401 \
#     custos-coordinator
#
# coordinator.toml must set data_dir = "/var/lib/custos" and listen on
# 0.0.0.0 (gRPC 7400, HTTPS 7401, metrics 7402). In production the database
# is PostgreSQL (database_url); run one coordinator at a time until fenced
# leadership exists.
#
# No HEALTHCHECK: the image carries no HTTP client (no curl, no shell needed),
# so nothing inside it can fetch /healthz. Orchestrators probe it from outside
# (the Kubernetes manifests in deploy/kubernetes use httpGet on the metrics
# port 7402: readiness on /healthz, which answers 503 while sealed or while
# the audit log cannot be written).

FROM rust:1.95.0-bookworm AS builder
# The toolchain of rust-toolchain.toml, without fetching its extra components.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p custos-coordinator --bin custos-coordinator \
        -p custos-cli --bin custos \
    && install -D -m 0755 target/release/custos-coordinator /out/bin/custos-coordinator \
    && install -D -m 0755 target/release/custos /out/bin/custos \
    && install -d -m 0700 /out/data

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="custos-coordinator" \
      org.opencontainers.image.description="Custos coordinator: policy, approvals, time locks, the audit log" \
      org.opencontainers.image.licenses="Apache-2.0"
# The system roots (NATS over TLS reads them), from the builder: the runtime
# stage installs no packages.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/bin/ /usr/local/bin/
COPY --from=builder --chown=10001:10001 /out/data /var/lib/custos
USER 10001:10001
WORKDIR /var/lib/custos
ENV CUSTOS_COORDINATOR_CONFIG=/etc/custos/coordinator.toml
VOLUME ["/var/lib/custos"]
# gRPC API (TLS), HTTPS API and approval app, /healthz and /metrics (plain
# HTTP, from monitoring).
EXPOSE 7400 7401 7402
HEALTHCHECK NONE
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/custos-coordinator", "--log-json"]
