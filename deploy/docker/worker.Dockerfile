# syntax=docker/dockerfile:1
#
# fourm-worker image with the CUDA backend and NCCL. Build from the repository root:
#
#   docker build -f deploy/docker/worker.Dockerfile -t REGISTRY/fourm-worker:TAG .
#
# NETWORK AT BUILD TIME: with `--features cuda`, burn's CUDA backend (cubecl-cuda -> cubecl-llvm)
# pulls in the `tracel-llvm-bundler` build script, which downloads a prebuilt LLVM bundle
# (~hundreds of MB) from https://github.com/tracel-ai/tracel-llvm/releases (v23.1.0-4,
# linux-x64.tar.xz and linux-x64.checksums.json for the version locked in Cargo.lock).
# The build stage therefore needs network access to GitHub. For an air-gapped build, place
# the two files beforehand where the build script looks for them:
#   $HOME/.cache/tracel/tracel-llvm-23.1.0-4-linux-x64.tar.xz
#   $HOME/.cache/tracel/tracel-llvm-23.1.0-4-linux-x64.checksums.json
# and set TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD=1 (the only switch that script reads besides
# DOCS_RS); see the LLVM_BUNDLE_DIR build argument below. DOCS_RS=1 skips the download entirely,
# which is enough to type-check (`DOCS_RS=1 cargo check -p fourm-worker --features cuda`, what CI
# runs) but not to link a working binary.
#
# This image build was not tested where it was written (no Docker, no access to the bundle).

ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG RUST_VERSION=1.95
# Optional: a folder of the build context holding the pre-downloaded LLVM bundle and its
# checksums file (names above); empty means "download during the build".
ARG LLVM_BUNDLE_DIR=
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
RUN if [ -n "${LLVM_BUNDLE_DIR}" ]; then \
      mkdir -p "$HOME/.cache/tracel" && cp "${LLVM_BUNDLE_DIR}"/tracel-llvm-* "$HOME/.cache/tracel/" \
      && echo "TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD=1" > /tmp/llvm.env; \
    else : > /tmp/llvm.env; fi
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -a && . /tmp/llvm.env && set +a \
 && cargo build --locked --release -p fourm-worker --bin fourm-worker --features cuda \
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
