# syntax=docker/dockerfile:1
#
# Mandate's container image: `mandate serve` on 0.0.0.0:8181, as an
# unprivileged user, its data directory a volume at /data. How to build, run
# and scale it: docs/deployment.md#container. Linted with hadolint in the test
# suite (crates/mandate/tests/container.rs).
#
#   docker build -t mandate .
#   docker run -p 127.0.0.1:8181:8181 -v mandate-data:/data mandate

# ---- build ----
# The toolchain CI builds and tests with (the crates need 1.89 or later:
# rust-version in Cargo.toml), on Debian 12 like the runtime image below: the
# binary links glibc, and must not ask for a newer one than the runtime has.
FROM rust:1.95.0-slim-bookworm AS build

# Release builds keep line tables for backtraces (Cargo.toml); in the image
# they would be 120 of its 155 MB. Function names stay. Build with
# `--build-arg CARGO_PROFILE_RELEASE_STRIP=none` to keep file:line too.
ARG CARGO_PROFILE_RELEASE_STRIP=debuginfo

WORKDIR /src
# .dockerignore lets in only what the build reads.
COPY . .

# The registry and the target directory are cache mounts, kept between builds
# (and absent from the image): the binary is copied out in the same step.
# The data directory is made here, where there is a shell, and copied into
# the runtime image with its owner: an empty named volume mounted on it
# takes that owner, so the unprivileged server can write to it. keys/ is
# where `serve` writes the keys it generates on first start (mode 0700, as
# `serve` makes it), and the mount point of the keys volume that instances
# on one database share (compose.yaml).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p mandate \
    && install -D -m 0755 target/release/mandate /out/mandate \
    && install -d -m 0755 /out/data \
    && install -d -m 0700 /out/data/keys

# ---- runtime ----
# glibc, libgcc and CA certificates (for identity issuers' JWKS URLs over
# https), no shell, no package manager; `nonroot` is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

# The version is the workspace's (Cargo.toml); the test suite checks they agree.
LABEL org.opencontainers.image.title="mandate" \
      org.opencontainers.image.description="Runtime authorization gateway for AI agents: decides every tool call with Cedar policies and live task context, and keeps signed receipts" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/mandate /usr/local/bin/mandate
COPY --from=build --chown=65532:65532 /out/data /data

# Every setting of `mandate serve` can be changed with its MANDATE_*
# variable (docs/configuration.md). The data directory holds the state, the
# receipts, the keys and the policy pack (with a PostgreSQL store, no state
# or receipts). Beyond loopback, decisions without a task credential are
# refused until callers are configured (`mandate callers token`).
ENV MANDATE_LISTEN=0.0.0.0:8181 \
    MANDATE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8181
USER 65532:65532

# The image has no shell and no curl: `mandate health` asks GET /v1/health
# and exits 0 while the server serves decisions. It asks the port above:
# whoever changes MANDATE_LISTEN changes this check too. While the server
# starts, it is asked every 2 s (engines from Docker 25 on), so that what
# waits for it to be healthy (compose.yaml) does not wait 30 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --start-interval=2s --retries=3 \
    CMD ["/usr/local/bin/mandate", "health", "--server", "http://127.0.0.1:8181", "--timeout", "4s"]

ENTRYPOINT ["/usr/local/bin/mandate"]
CMD ["serve"]
