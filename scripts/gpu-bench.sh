#!/usr/bin/env bash
# GPU benchmark of the engine against HF transformers (engine issue, item 12). Prepared here,
# run on a machine with an NVIDIA GPU, PyTorch 2.11 in /opt/torch/.venv and no internet.
#
# Carry: the release binaries built here (`cargo build --release --bins -p slc-detector
# -p slc-reasoner -p slc-e2e`) and this repo's working tree. No cargo there. Budget: about 5
# minutes for the engine part (checkpoint ~1 min, 2 x 2 engines x 3 runs), plus the turn part.
#
#   scripts/gpu-bench.sh [path/to/slc-detector]
#
# First checks CUDA parity on the tiny fixtures (scripts/cuda_parity.py: ours against
# transformers, f32 and bf16, logits and 32 greedy tokens). Then prints, for a 448x448 image and a
# 1920x1080 image, TTFT (vision + prefill) and decode tok/s at batch 1, ours and HF's, on the
# full-depth random checkpoint with the exact 3B shapes, bf16, beside the bound the H200's
# 4.8 TB/s sets on decode.
# Then, when target/release/slc-turn-bench is there (SLC_GPU_TURN_BENCH=0 skips it), one turn
# benchmark at full depth: 2 concepts, optimized vs naive, on CUDA in bf16.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:-$here/../target/release/slc-detector}"
python="${SLC_GPU_PYTHON:-/opt/torch/.venv/bin/python}"
work="${SLC_BENCH_DIR:-/tmp/slc-gpu-bench}"
mkdir -p "$work"
# The binary's RUNPATH names this machine's wheel; point the loader at the GPU machine's one.
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$binary" device-info | grep -Eq '"cuda_available": ?true' || { echo "slc-detector sees no CUDA device" >&2; exit 1; }
"$python" -c 'import torch, transformers; assert torch.cuda.is_available(); print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'

# CUDA parity on the tiny fixtures first: ours against transformers, f32 and bf16.
timeout 120 "$python" "$here/cuda_parity.py" --binary "$binary" --device cuda || echo "CUDA parity: FAILED" >&2

for size in "448 448" "1080 1920"; do
  set -- $size
  timeout 150 "$python" "$here/bench_engine.py" --binary "$binary" --work-dir "$work" \
    --text-layers 36 --vision-layers 32 --dtype bf16 --device cuda --threads 8 \
    --image-height "$1" --image-width "$2" --new-tokens 64 --reps 3 --warmup 1 --bandwidth-gbs 4800
done

turn_bench="$(dirname "$binary")/slc-turn-bench"
if [ -x "$turn_bench" ] && [ "${SLC_GPU_TURN_BENCH:-1}" != 0 ]; then
  timeout 900 "$turn_bench" --bin-dir "$(dirname "$binary")" \
    --make-checkpoint "$work/turn-3b-full" --checkpoint-dtype bf16 \
    --text-layers 36 --vision-layers 32 --device cuda --dtype bf16 \
    --concepts 2 --reps 2 --log-dir "$work/turn-logs" --out "$work/turn-bench.json"
fi
