# syntax=docker/dockerfile:1.7
#
# The `coinalarm` image: one binary that runs any set of services (`coinalarm serve all`, `serve api`,
# ...), the one-shot setup (`coinalarm db migrate`, `coinalarm nats apply`) and the local fakes
# (`coinalarm fake-exchange`, `coinalarm fake-twilio`).
#
#   docker build -t coinalarm:dev .
#   docker run --rm coinalarm:dev --help
#
# Build stage: a plain `cargo build --release` of the one package, with BuildKit cache mounts for the
# registry and target/ so a rebuild after a source change recompiles only our crates. Runtime stage:
# Debian slim, a non-root user, the binary and the NATS server configs (for reference and for running
# nats-server from them; the Upbit capture and market list the fakes use are compiled into the binary,
# so no data directory is needed at run time).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /build
# Only what the build reads (.dockerignore is an allowlist): the workspace manifests, every member (cargo
# resolves the whole workspace even for `-p coinalarm`) and data/ (include_str! of the Upbit capture).
COPY Cargo.toml Cargo.lock ./
COPY proto-events proto-events
COPY services services
COPY test-support test-support
COPY benches benches
COPY data data
# --locked: the image is built from exactly the dependency versions the tests ran with. target/ is a
# cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked -p coinalarm \
 && install -D -m 0755 target/release/coinalarm /out/coinalarm

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="coinalarm" \
      org.opencontainers.image.description="CoinAlarm: real-time crypto price alerts by SMS" \
      org.opencontainers.image.source="https://github.com/coinalarm/coinalarm" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# ca-certificates: the Upbit websocket and Twilio are reached over TLS with the system's roots
# (rustls-platform-verifier / rustls-native-certs). curl: container health checks against /readyz
# (Kubernetes probes do not need it; compose healthchecks do).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 coinalarm \
 && useradd --system --uid 10001 --gid coinalarm --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin coinalarm
COPY --from=builder /out/coinalarm /usr/local/bin/coinalarm
COPY nats/*.conf /usr/share/coinalarm/nats/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# 8080: the API (`[api] listen`), 9464: Prometheus metrics (`[telemetry] metrics_listen`). Both are
# what the config must say; the image sets no COINALARM_* variable, since those would override the
# operator's config file.
EXPOSE 8080 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/coinalarm"]
CMD ["serve", "all"]
