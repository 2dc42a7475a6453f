#!/usr/bin/env bash
# Builds the coordinator image (which is also the CPU worker image: workers run `fourm worker`)
# with podman, from binaries built on this host, so that an image costs no second cold cargo
# build. Users with a registry and Docker can keep using deploy/docker/coordinator.Dockerfile
# (multi-stage, builds inside the image).
#
#   deploy/images.sh [--base IMAGE] [--profile release|dev] [--tag NAME]
#
#   --base     runtime base image (default docker.io/library/debian:bookworm-slim). When it cannot
#              be pulled (no registry reachable), a Debian bookworm base made locally with
#              debootstrap from Debian's package archive is used instead (localhost/fourm-base).
#   --profile  cargo profile of the binaries (default release; `dev` reuses a test build).
#   --tag      image name (default localhost/fourm-coordinator:dev).
#
# Needs podman (and debootstrap for the local base); on Debian:
#   apt-get install podman buildah runc debootstrap
# Settings podman needs on machines like CI's (runc instead of crun, ulimits within the hard
# limits) come from a containers.conf of our own (deploy/containers-env.sh), not from /etc.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/containers-env.sh

base="docker.io/library/debian:bookworm-slim"
profile="release"
tag="localhost/fourm-coordinator:dev"
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) profile_dir=release; cargo_profile=(--release) ;;
  dev) profile_dir=debug; cargo_profile=() ;;
  *) echo "images.sh: --profile must be release or dev" >&2; exit 2 ;;
esac

start=$(date +%s)

# 1. The base image: the named one if it can be pulled (or is already here), else a local one.
if podman image exists "$base" || timeout 60 podman pull -q "$base" >/dev/null 2>&1; then
  echo "== base image $base"
else
  local_base="localhost/fourm-base:bookworm"
  echo "== $base cannot be pulled; using $local_base (debootstrap from Debian's archive)"
  if ! podman image exists "$local_base"; then
    command -v debootstrap >/dev/null || {
      echo "images.sh: debootstrap is needed to make a base image offline (apt-get install debootstrap)" >&2
      exit 1
    }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    # ca-certificates for TLS to object stores, curl for the image's HEALTHCHECK.
    debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$rootfs" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$local_base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
  fi
  base="$local_base"
fi

# 2. The binaries, built here (the host is Debian 12, as the image's base).
echo "== cargo build ${cargo_profile[*]} -p fourm-coordinator -p fourm"
cargo build "${cargo_profile[@]}" --locked -p fourm-coordinator --bin fourm-coordinator \
  -p fourm --bin fourm
target="${CARGO_TARGET_DIR:-target}/$profile_dir"

# 3. The image, from a context holding only the two binaries.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -m 0755 "$target/fourm-coordinator" "$target/fourm" "$context/"
# Debug information stays on the host (a dev build carries hundreds of MiB of it).
if command -v strip >/dev/null; then
  strip --strip-debug "$context/fourm-coordinator" "$context/fourm"
fi
podman build -q --format docker -f deploy/docker/prebuilt.Dockerfile --build-arg "BASE=$base" -t "$tag" \
  "$context" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "== built $tag on $base: $((size / 1024 / 1024)) MiB, $(($(date +%s) - start)) s"
