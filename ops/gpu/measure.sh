#!/usr/bin/env bash
# On the CUDA machine, from the project root, after (here) `bash ops/package.sh --no-libtorch --out .gpu` and
# `cp ../shared/peers/*.py .gpu/`:
# every GPU figure the open issues ask for, in one device call (results under $OUT, max 8 files).
#   1. the CUDA route (doctor)                                           issue 2
#   2. BEiT-B train step, batch 128, fp32 and bf16 (fp32 masters), gradients checked against fp32,
#      next to peer_beit_step.py in the same run                         issues 4 and 6
#   3. decode + augment on 16 cores against torchvision+PIL              issue 3
#   4. pre-tokenization vs forward-only for vqkd-base and clip-b16       issue 5
#   5. NCCL through the collective layer at world size 1 (MIMFLOW_COLLECTIVE=nccl): the all-reduce bandwidth on
#      BEiT-B's flat gradient buffer, and BEiT pretraining whose losses must equal the one-process run's (appended
#      to train.txt; the 8-file limit)                                    distributed training
# Usage: bash ops/gpu/measure.sh [OUTPUT_DIR]
set -euo pipefail
out=${1:-${OUT:-.}}
mkdir -p "$out" /tmp/mimflow
source ops/gpu/release.sh
run() { mimflow "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c 'import torch; print("pytorch", torch.__version__, "cuda", torch.version.cuda)'; nproc; } > "$out/machine.txt"
run doctor > "$out/doctor.txt" 2>&1 || true
run bench train --device cuda --model beit-base --batch 128 --dtype fp32 --json "$out/train-fp32.json" > "$out/train.txt" 2>&1 || true
run bench train --device cuda --model beit-base --batch 128 --dtype bf16 --peer .gpu/peer_beit_step.py --json "$out/train-bf16.json" >> "$out/train.txt" 2>&1 || true
run datasets synth --kind imagenet --out /tmp/mimflow/data --images 2000 --classes 20 > /dev/null
run bench data --data /tmp/mimflow/data --layout imagenet --workers 1,16 --images 2000 --peer .gpu/peer_data.py --python python3 --json "$out/data.json" > "$out/data.txt" 2>&1 || true
for arch in vqkd-base clip-b16; do run model init --arch "$arch" --out "/tmp/mimflow/$arch" > /dev/null; done
{ run bench tokenize --device cuda --data /tmp/mimflow/data --layout imagenet --tokenizer /tmp/mimflow/vqkd-base --images 1024 --batch 128 --workers 16
  run bench tokenize --device cuda --data /tmp/mimflow/data --layout imagenet --teacher /tmp/mimflow/clip-b16 --images 1024 --batch 128 --workers 16; } > "$out/tokenize.txt" 2>&1 || true
{ echo "== NCCL all-reduce, world size 1, BEiT-B gradients (bench train through the collective)"
  MIMFLOW_COLLECTIVE=nccl run bench train --device cuda --model beit-base --batch 128 --dtype bf16 --steps 10 --json /tmp/mimflow/nccl-bench.json && cat /tmp/mimflow/nccl-bench.json
  echo "== BEiT pretraining, 20 steps: one process vs NCCL at world size 1 (losses must be equal)"
  run tokenize --data /tmp/mimflow/data --layout imagenet --tokenizer /tmp/mimflow/vqkd-base --views 1 --device cuda --batch 128 --workers 16 --out /tmp/mimflow/shards > /dev/null
  common=(pretrain --objective beit --model beit-tiny --shards /tmp/mimflow/shards --steps 20 --batch 64 --device cuda --precision fp32 --workers 16 --seed 3)
  run "${common[@]}" --out /tmp/mimflow/pt-single > /dev/null
  MIMFLOW_COLLECTIVE=nccl run "${common[@]}" --out /tmp/mimflow/pt-nccl > /dev/null
  python3 - <<'PY'
import json
a=[json.loads(l)["loss"] for l in open("/tmp/mimflow/pt-single/metrics.jsonl")]
b=[json.loads(l)["loss"] for l in open("/tmp/mimflow/pt-nccl/metrics.jsonl")]
print("steps", len(a), len(b), "max |difference|", max(abs(x-y) for x,y in zip(a,b)), "equal" if a==b else "DIFFERENT")
PY
} >> "$out/train.txt" 2>&1 || true
