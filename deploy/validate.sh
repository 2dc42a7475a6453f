#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests: renders every kustomization with
# `kubectl kustomize` and checks the result against the OpenAPI schemas of each Kubernetes
# version below with `kubernetes-validate --strict` (unknown fields are errors).
#
# Needs kubectl (with its built-in kustomize) and kubernetes-validate on PATH; installs nothing:
#   pip install kubernetes-validate
#
# deploy/k8s/jobset renders a JobSet, a custom resource: kubernetes-validate has no schema for it
# and only warns, so the JobSet object itself is not schema-checked (the rest of that
# kustomization is).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s="$here/k8s"

# Keep in sync with deploy/README.md.
versions=(1.31.0 1.32.0 1.33.0 1.34.0 1.35.0)
kustomizations=(base overlays/cpu-demo overlays/gpu jobset)
# Plain manifests that no kustomization includes.
plain=(secrets/job-token.example.yaml secrets/object-store.example.yaml secrets/tls.example.yaml)

for tool in kubectl kubernetes-validate; do
  command -v "$tool" >/dev/null || { echo "validate.sh: $tool not found" >&2; exit 2; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

files=()
for k in "${kustomizations[@]}"; do
  out="$work/${k//\//_}.yaml"
  kubectl kustomize "$k8s/$k" > "$out"
  # An empty rendering would validate vacuously.
  grep -q '^kind:' "$out" || { echo "validate.sh: $k rendered nothing" >&2; exit 1; }
  files+=("$out")
done
for p in "${plain[@]}"; do
  files+=("$k8s/$p")
done

status=0
for v in "${versions[@]}"; do
  if kubernetes-validate --strict --quiet --kubernetes-version "$v" "${files[@]}"; then
    echo "Kubernetes $v: ${#kustomizations[@]} kustomizations and ${#plain[@]} manifests valid"
  else
    echo "Kubernetes $v: INVALID" >&2
    status=1
  fi
done
exit "$status"
