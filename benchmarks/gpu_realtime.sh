#!/usr/bin/env bash
# Full-size Fast-WAM real-time check on one CUDA GPU (random weights, bf16): the action-loop tests
# on CUDA (captured graphs vs eager), then the latency benchmark for the R1 Lite 384x320 composite
# (Fast-WAM vs Joint vs IDM, 100 runs; inductor-fused layers in CUDA graphs), the graphs without
# fusion, and the 3-camera 384x1152 row. Logs go to $1 (default runs/gpu_realtime). Needs python3 with torch (CUDA),
# diffusers and transformers, and ros2_ws/src/fastwam_policy on PYTHONPATH (scripts/env.sh).
set -uo pipefail
out=${1:-runs/gpu_realtime}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
bench=(python3 benchmarks/inference_latency.py --preset wan22-5b --device cuda --dtype bfloat16)
run() {  # name, timeout, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | grep -v Warning
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
run r1_lite_fast 200 "${bench[@]}" --compile torch_compile --runs 100 --variants fast_wam --profile 25
run r1_lite 300 "${bench[@]}" --compile torch_compile --runs 100
run r1_lite_autotune 240 "${bench[@]}" --compile torch_compile --runs 100 --variants fast_wam \
  --inductor-mode max-autotune-no-cudagraphs
run row3 120 "${bench[@]}" --compile torch_compile --runs 100 --variants fast_wam --layout row:3:384x384
run tests 120 python3 -m pytest -q -p no:cacheprovider -k cuda \
  ros2_ws/src/fastwam_policy/test/test_model_action_loop.py ros2_ws/src/fastwam_policy/test/test_model_wan.py
