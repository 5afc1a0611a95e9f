#!/usr/bin/env bash
# On the CUDA machine, from the project root, with .gpu/ from `bash ops/package.sh --no-libtorch --out .gpu`:
# proves the CUDA route with the release and keeps the output.
# Usage: bash ops/gpu/doctor.sh [OUTPUT_DIR]   (writes gpu.txt, doctor.txt and doctor.json there; default: $OUT or .)
set -euo pipefail
out=${1:-${OUT:-.}}
mkdir -p "$out"
source ops/gpu/release.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch; print("pytorch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.txt"
head -n 1 "$release_dir/mimflow/RELEASE" | tee -a "$out/gpu.txt"
mimflow doctor | tee "$out/doctor.txt"
mimflow doctor --json > "$out/doctor.json"
