#!/usr/bin/env bash
# Runs the cpu-demo job (deploy/k8s/overlays/cpu-demo) in containers on this machine, from the
# image deploy/images.sh builds: a pod with the coordinator and two workers (they share
# localhost, as the Kubernetes Services make them reachable), the synthetic dataset and the
# checkpoints on a shared volume, the job token as a podman secret, uid 65532 and read-only root
# filesystems. It checks that /status and /metrics answer through the published port, kills one
# worker container once a checkpoint is committed and starts it again (as a Job would replace
# the pod), and that the job then finishes with its final checkpoint committed and every worker
# exiting 0.
#
#   deploy/demo-containers.sh [--image NAME] [--port PORT] [--keep]
#
#   --image  default localhost/fourm-coordinator:dev (deploy/images.sh)
#   --port   host port of the coordinator's /status and /metrics (default 19090)
#   --keep   leave the pod, volume and secret behind (they are removed otherwise)
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/containers-env.sh

image="localhost/fourm-coordinator:dev"
port=19090
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo-containers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
podman image exists "$image" || {
  echo "demo-containers.sh: no image $image; run deploy/images.sh first" >&2
  exit 1
}

pod=fourm-demo
volume=fourm-demo-shared
secret=fourm-demo-token
overlay=deploy/k8s/overlays/cpu-demo
start=$(date +%s)

cleanup() {
  if [ -z "$keep" ]; then
    podman pod rm -f "$pod" >/dev/null 2>&1 || true
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
    podman secret rm "$secret" >/dev/null 2>&1 || true
  fi
}
fail() {
  echo "demo-containers.sh: FAILED: $*" >&2
  for c in coordinator worker-0 worker-1; do
    echo "--- last lines of $c" >&2
    podman logs --tail 15 "$pod-$c" 2>&1 | cut -c1-400 >&2 || true
  done
  exit 1
}
trap cleanup EXIT
cleanup

# The demo's public token (the overlay's secretGenerator literal) as a podman secret.
token=$(sed -n 's/^ *- token=//p' "$overlay/kustomization.yaml")
[ -n "$token" ] || fail "no token literal in $overlay/kustomization.yaml"
printf '%s' "$token" | podman secret create "$secret" - >/dev/null

# The shared volume, owned by the image's non-root user.
podman volume create "$volume" >/dev/null
podman run --rm --no-healthcheck --user 0 -v "$volume:/data" --entrypoint /bin/chown "$image" \
  65532:65532 /data

podman pod create --name "$pod" -p "127.0.0.1:$port:9090" >/dev/null

# Settings shared by every container: non-root, read-only root filesystem, no capabilities,
# the overlay's configuration files read-only, the token as a file only uid 65532 can read.
common=(
  --pod "$pod" --user 65532:65532 --read-only --cap-drop ALL
  --security-opt no-new-privileges --no-healthcheck
  --tmpfs /run/secrets:size=64k
  -v "$volume:/data"
  -v "$PWD/$overlay/coordinator.toml:/etc/fourm/config/coordinator.toml:ro,Z"
  -v "$PWD/$overlay/worker.toml:/etc/fourm/config/worker.toml:ro,Z"
  --secret "$secret,type=mount,uid=65532,gid=65532,mode=0400"
  -e FOURM_TOKEN_FILE=/run/secrets/$secret -e RUST_LOG=info -e HOME=/tmp
)

# The dataset, as the coordinator's init container writes it.
echo "== synthetic dataset on the shared volume"
podman run --rm "${common[@]}" -e RUST_LOG=warn --name "$pod-synth" --entrypoint /bin/sh "$image" -c \
  'test -f /data/synth/index.json || exec /usr/local/bin/fourm data synth --out /data/synth --samples 512 --seed 0' \
  >/dev/null

echo "== coordinator and two workers in pod $pod"
podman run -d "${common[@]}" --name "$pod-coordinator" "$image" \
  --config=/etc/fourm/config/coordinator.toml --log-json >/dev/null
worker() {
  podman run -d "${common[@]}" --name "$pod-worker-$1" --entrypoint /usr/local/bin/fourm \
    -e "FOURM_WORKER_ID=worker-$1" \
    -e "FOURM_COLLECTIVE_LISTEN=0.0.0.0:$((29500 + $1))" \
    -e "FOURM_COLLECTIVE_ADVERTISE=127.0.0.1:$((29500 + $1))" \
    "$image" worker --config=/etc/fourm/config/worker.toml \
    --coordinator=http://127.0.0.1:50051 --log-json >/dev/null
}
worker 0
worker 1

status() { curl -fsS "http://127.0.0.1:$port/status" 2>/dev/null || true; }
field() { status | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))" 2>/dev/null || true; }
running() { [ "$(podman inspect --format '{{.State.Running}}' "$pod-$1" 2>/dev/null)" = true ]; }

# /status and /metrics through the published port; wait for the first committed checkpoint.
deadline=$(($(date +%s) + 300))
until [ "$(field committed_step)" != "" ] && [ "$(field committed_step)" -gt 0 ]; do
  running coordinator || fail "the coordinator exited before the first checkpoint"
  [ "$(date +%s)" -lt "$deadline" ] || fail "no checkpoint committed within 300 s"
  sleep 2
done
echo "== /status: $(status | head -c 300)"
# The image's HEALTHCHECK command (podman runs none here: it would need systemd timers).
podman exec "$pod-coordinator" curl -fsS -o /dev/null http://127.0.0.1:9090/status ||
  fail "the image's health check (curl /status inside the container) failed"
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics") || fail "/metrics did not answer"
grep -q '^fourm_committed_step' <<<"$metrics" || fail "/metrics has no fourm_committed_step"
echo "== /metrics answers ($(grep -c '^fourm_' <<<"$metrics") fourm_ samples)"

# A worker dies mid-run; its container is started again, as the Job would replace the pod.
killed_at=$(field committed_step)
echo "== killing worker-1 (committed step $killed_at)"
podman kill -s KILL "$pod-worker-1" >/dev/null
sleep 5
podman start "$pod-worker-1" >/dev/null

# The job finishes: /status says so (the coordinator keeps serving it, as its Deployment does),
# and every worker exits 0.
deadline=$(($(date +%s) + 600))
until [ "$(field state)" = finished ]; do
  [ "$(field state)" != failed ] || fail "the job failed: $(field failure)"
  running coordinator || fail "the coordinator exited before the job finished"
  [ "$(date +%s)" -lt "$deadline" ] || fail "the job did not finish within 600 s"
  sleep 2
done
for w in 0 1; do
  rc=$(timeout 120 podman wait "$pod-worker-$w") || fail "worker-$w did not exit"
  [ "$rc" = 0 ] || fail "worker-$w exited with $rc"
done
formed=$(field generations_formed)
[ "${formed:-0}" -ge 2 ] || fail "no generation was formed after the kill ($formed in all)"
total=$(sed -n 's/^total_steps *= *//p' "$overlay/coordinator.toml")
manifests=$(podman run --rm --no-healthcheck --user 65532:65532 -v "$volume:/data" --entrypoint /bin/sh "$image" \
  -c 'ls -d /data/checkpoints/*/step-*/MANIFEST.json 2>/dev/null' || true)
grep -q "step-0*$total-" <<<"$manifests" || fail "no committed checkpoint of step $total: $manifests"
echo "== job finished: checkpoint of step $total committed after worker-1 was killed at step \
$killed_at ($formed generations formed); $(($(date +%s) - start)) s"
echo "$manifests" | sed 's/^/   /'
