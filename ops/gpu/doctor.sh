#!/usr/bin/env bash
# On the CUDA machine, from the project root, after ../shared/gpu/pack.sh: proves the CUDA route and keeps the output.
# Usage: bash ops/gpu/doctor.sh [OUTPUT_DIR]   (writes doctor.txt and doctor.json there; default: $OUT or .)
set -euo pipefail
out=${1:-${OUT:-.}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch; print("pytorch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.txt"
bash .gpu/remote.sh MimFlow.Cli.dll doctor | tee "$out/doctor.txt"
bash .gpu/remote.sh MimFlow.Cli.dll doctor --json > "$out/doctor.json"
