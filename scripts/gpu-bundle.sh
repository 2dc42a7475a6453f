#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs, with the CUDA backend, and packs it into one file that
# can be copied to a GPU machine on its own (the binaries load CUDA, NVRTC and NCCL at run time
# and need only libc and libstdc++ to start).
#
#   scripts/gpu-bundle.sh [OUT]      (default OUT: target/gpu-check.tar.zst)
#
# Runs scripts/llvm-bundle.sh first (burn's CUDA backend links LLVM), then
#   cargo build --release --locked -p fourm -p fourm-model --features fourm/cuda,fourm-model/cuda
#   cargo test --release --locked -p fourm-collective --features cuda --test conformance --no-run
# (a cold build takes about half an hour on 2 cores), strips the binaries and packs
# gpu-check.sh with them: on the GPU machine, `tar --zstd -xf gpu-check.tar.zst &&
# gpu-check/gpu-check.sh`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/target/gpu-check.tar.zst}"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

command -v zstd >/dev/null || { echo "gpu-bundle: zstd is needed" >&2; exit 1; }
scripts/llvm-bundle.sh
cargo build --release --locked -p fourm -p fourm-model --features fourm/cuda,fourm-model/cuda
conformance="$(cargo test --release --locked -p fourm-collective --features cuda \
  --test conformance --no-run --message-format=json |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "conformance" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$conformance" ]] || { echo "gpu-bundle: no conformance test binary" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/gpu-check"
for bin in fourm bench-step bench-generate; do
  cp "$target/release/$bin" "$stage/gpu-check/"
done
cp "$conformance" "$stage/gpu-check/conformance"
cp scripts/gpu-check.sh "$stage/gpu-check/"
strip --strip-debug "$stage"/gpu-check/{fourm,bench-step,bench-generate,conformance}
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - gpu-check | zstd -19 -T0 -q -f -o "$out"
echo "gpu-bundle: $out ($(du -h "$out" | cut -f1)); on the GPU machine:"
echo "  tar --zstd -xf $(basename "$out") && gpu-check/gpu-check.sh"
