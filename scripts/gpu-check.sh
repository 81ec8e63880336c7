#!/usr/bin/env bash
# The prepared GPU check (one run inside a device lease, < 6 minutes on an H100/H200; needs CMake, a C++
# compiler and nvcc, no Node): builds the native runtime for the GPU it finds, then runs shipped plans on the
# CPU backend and on CUDA with the same weights and inputs (tools/plan_check: relative L2 of every output, ms
# per run on each) and prints one table last. Exit code: 0 all within 1e-4, 1 a difference, 2 no build / GPU.
#   bash scripts/gpu-check.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/gpu-check}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed)"
  exit 2
fi
GPU=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1)
CAP=$(echo "$GPU" | awk -F', ' '{print $2}' | tr -d .)
case "$CAP" in
  90) ARCH=90a ;;
  *) ARCH=$CAP ;;
esac
echo "gpu-check: $GPU -> sm_$ARCH"
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
if ! cmake -S runtime/native -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DWITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$BUILD.cmake.log" 2>&1 ||
  ! cmake --build "$BUILD" --target plan_check -j "$(nproc)" >"$BUILD.build.log" 2>&1; then
  tail -30 "$BUILD.cmake.log" "$BUILD.build.log" 2>/dev/null
  echo "gpu-check: the build failed"
  exit 2
fi
TOOL="$BUILD/plan_check"
ROWS=()
STATUS=0
check() { # plan [weights]
  local args=("$1" --device cuda --iters 5 --threads "$(nproc)")
  [ -n "${2:-}" ] && args+=(--weights "$2")
  local out
  out=$(timeout 120 "$TOOL" "${args[@]}" 2>&1)
  local rc=$?
  echo "$out"
  if [ $rc -ne 0 ]; then STATUS=1; fi
  while IFS= read -r l; do ROWS+=("$l"); done < <(echo "$out" | grep -v '^plan ' | grep -v '^$')
}
check generated/tiny-flux/transformer/plan.json models/tiny-flux/transformer/diffusion_pytorch_model.safetensors
check generated/tiny-flux/text_encoder/plan.json models/tiny-flux/text_encoder/model.safetensors
check generated/tiny-flux/vae/plan.json models/tiny-flux/vae/diffusion_pytorch_model.safetensors
check generated/flux1-dev/text_encoder/plan.json
check generated/wan2.1-t2v-1.3b/text_encoder/plan.json
check generated/wan2.1-t2v-1.3b/vae/plan.json
check generated/wan2.1-t2v-1.3b/transformer/plan.json
echo
echo "gpu-check ($GPU), fp32, CPU backend vs CUDA backend, same weights and inputs (pass: relL2 <= 1e-4):"
printf '%-44s %-24s %12s %12s %12s %8s\n' plan output relL2 "cpu ms" "cuda ms" speedup
for r in "${ROWS[@]}"; do echo "$r"; done
exit $STATUS
