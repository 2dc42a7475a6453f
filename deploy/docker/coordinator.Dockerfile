# syntax=docker/dockerfile:1
#
# fourm-coordinator image. Build from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t REGISTRY/fourm-coordinator:TAG .
#
# The image also carries the `fourm` program (/usr/local/bin/fourm): the cpu-demo overlay runs
# `fourm data synth` from this image in an init container to write its synthetic dataset.
# Neither binary needs a GPU or system libraries beyond glibc and the CA certificates (TLS to
# object stores).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The .proto files are compiled by protox (pure Rust): no protoc needed.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p fourm-coordinator --bin fourm-coordinator \
 && cargo build --locked --release -p fourm --bin fourm \
 && install -D -m 0755 target/release/fourm-coordinator /out/fourm-coordinator \
 && install -D -m 0755 target/release/fourm /out/fourm

FROM ${RUNTIME_IMAGE}
# curl only serves the HEALTHCHECK below (Kubernetes uses its native gRPC probe instead).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 fourm \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fourm
COPY --from=build /out/fourm-coordinator /usr/local/bin/fourm-coordinator
COPY --from=build /out/fourm /usr/local/bin/fourm
USER 65532:65532
# gRPC (workers; also grpc.health.v1) and HTTP (/metrics, /status).
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/status"]
ENTRYPOINT ["/usr/local/bin/fourm-coordinator"]
