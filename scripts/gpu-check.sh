#!/usr/bin/env bash
# The one-shot GPU check: run it on a machine with one NVIDIA GPU (CUDA driver and NCCL
# installed) after building, or from the pack scripts/gpu-bundle.sh makes. Prints one table:
#   1. the training step of 4M-B (fm_base_12e_12d_swiglu_nobias, 4M-7 modalities at 224 px,
#      256 input + 256 target tokens) at the largest batch per GPU that fits (of those tried),
#      its tokens/s and MFU against the GPU's bf16 peak; the same for 4M-L;
#   2. `fourm launch --workers 1` with device = "cuda", collective = "nccl" on the synthetic
#      dataset: a run that checkpoints, then the same job resumed to a later step;
#   3. the collective conformance suite's NCCL checks with world size 1;
#   4. generation tokens/s (MaskGIT, ROAR, autoregressive) of a model of 4M-B's size.
# Meant to finish within 8 minutes on an H100/H200; each part has its own time limit.
#
#   gpu-check.sh [--out DIR]    binaries from FOURM_BIN (default: this script's folder when it
#                               holds them, else target/release; conformance from
#                               FOURM_CONFORMANCE or <bin>/conformance)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$here/fourm" ]]; then bin_default="$here"; else bin_default="$here/../target/release"; fi
bin="${FOURM_BIN:-$bin_default}"
conformance="${FOURM_CONFORMANCE:-$bin/conformance}"
out="$(mktemp -d -t fourm-gpu-check.XXXXXX)"
if [[ "${1:-}" == "--out" && -n "${2:-}" ]]; then out="$2"; mkdir -p "$out"; fi

for b in fourm bench-step bench-generate; do
  [[ -x "$bin/$b" ]] || { echo "gpu-check: $bin/$b not found (set FOURM_BIN)" >&2; exit 2; }
done
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found" >&2; exit 2; }
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -n1)"
[[ -n "$gpu" ]] || { echo "gpu-check: no GPU" >&2; exit 2; }
start=$SECONDS
rows=()
row() { rows+=("$(printf '%-28s %-8s %s' "$1" "$2" "$3")"); }
field() { grep -m1 "^$2" "$1" | awk -v n="$3" '{print $n}'; }

# 1. Step time at the largest batch that fits, doubling until a run fails or is too slow.
step_check() {
  local label="$1" preset="$2" budget="$3" best="" b log t0
  for b in $4; do
    log="$out/step-$label-b$b.txt"
    t0=$SECONDS
    if ! timeout 120 "$bin/bench-step" --device cuda --preset "$preset" --modalities mod7 \
      --inputs 256 --targets 256 --batch "$b" --warmup 2 --steps 5 --gpu-name "$gpu" >"$log" 2>&1; then
      break
    fi
    best="$log:$b"
    # Stop doubling when one run takes its budget or the check as a whole nears its 8 minutes.
    (( SECONDS - t0 > budget || SECONDS - start > 200 )) && break
  done
  if [[ -z "$best" ]]; then
    row "step $label" FAIL "no batch ran (see $out/step-$label-*.txt)"
    return
  fi
  log="${best%:*}"
  row "step $label" ok "bf16, batch ${best##*:}: $(field "$log" "median step" 3) ms/step, $(field "$log" "tokens/s" 2) tokens/s, MFU $(field "$log" "MFU" 2) %"
}
step_check 4M-B fm_base_12e_12d_swiglu_nobias 60 "32 64 128 256"
step_check 4M-L fm_large_24e_24d_swiglu_nobias 60 "16 32 64 128"

# 2. A local job on the GPU with NCCL: 60 steps with checkpoints, then resumed to 100.
job="$out/launch"
cat >"$out/launch.toml" <<'EOF'
[launch]
device = "cuda"
collective = "nccl"
checkpoint_every = 20
EOF
t0=$SECONDS
if timeout 240 "$bin/fourm" launch --workers 1 --steps 60 --config "$out/launch.toml" --out "$job" \
  >"$out/launch-1.txt" 2>&1 &&
  timeout 120 "$bin/fourm" launch --workers 1 --steps 100 --config "$out/launch.toml" --out "$job" \
    >"$out/launch-2.txt" 2>&1 &&
  grep -q "resuming" "$out/launch-2.txt" &&
  compgen -G "$job/checkpoints/step-000000100-*/MANIFEST.json" >/dev/null; then
  row "launch nccl + resume" ok "60 steps, resumed to 100 ($((SECONDS - t0)) s)"
else
  row "launch nccl + resume" FAIL "see $out/launch-1.txt, $out/launch-2.txt, $job/logs"
fi

# 3. NCCL conformance with world size 1 (checks that need more ranks are listed as ignored).
if [[ -x "$conformance" ]]; then
  timeout 180 "$conformance" nccl:: >"$out/conformance.txt" 2>&1
  rc=$?
  summary="$(grep -m1 '^test result' "$out/conformance.txt")"
  passed="$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")"
  if [[ $rc -eq 0 && "${passed:-0}" -gt 0 ]]; then
    row "nccl conformance" ok "$summary"
  else
    row "nccl conformance" FAIL "$summary (see $out/conformance.txt)"
  fi
else
  row "nccl conformance" SKIP "no conformance binary at $conformance"
fi

# 4. Generation of a 4M-B-sized model.
if timeout 120 "$bin/bench-generate" --device cuda --model base --runs 3 >"$out/generate.txt" 2>&1; then
  rate() { grep -m1 "$1" "$out/generate.txt" | sed -E 's/.* ([0-9]+) tokens\/s.*/\1/'; }
  row "generation 4M-B size" ok "MaskGIT $(rate maskgit), ROAR $(rate roar), AR+cache $(rate 'autoregressive, kv cache') tokens/s"
else
  row "generation 4M-B size" FAIL "see $out/generate.txt"
fi

echo
echo "fourm GPU check on $gpu ($((SECONDS - start)) s; logs in $out)"
printf '%-28s %-8s %s\n' check result details
for r in "${rows[@]}"; do echo "$r"; done
grep -q "FAIL" <<<"${rows[*]}" && exit 1
exit 0
