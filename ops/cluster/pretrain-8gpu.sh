#!/usr/bin/env bash
# One node, 8 GPUs: the same command line as a one-process run, started 8 times by mpirun (rank i drives GPU i).
# --batch stays the global batch. Ctrl-C (or SIGTERM) ends every rank; run it again with --resume to continue.
# mimflow is the release (ops/package.sh --no-libtorch; no .NET needed): once per node
#   tar -xzf mimflow-linux-x64-nolibtorch.tar.gz -C /opt        # → /opt/mimflow/mimflow, the launcher
set -euo pipefail
mimflow=${MIMFLOW:-/opt/mimflow/mimflow}
export MIMFLOW_LIBTORCH=${MIMFLOW_LIBTORCH:?point it at a CUDA PyTorch torch/lib}
mpirun -np 8 --bind-to none -x MIMFLOW_LIBTORCH \
  "$mimflow" pretrain --objective beitv2 --model beit-base --shards /shards/in1k --data /data/imagenet \
    --out /runs/beitv2-b16 --epochs 300 --batch 2048 --device cuda --workers 12 --checkpoint-every 1000 --resume \
    --progress-interval 60 --metrics-port 9464
# Without MPI (NCCL's id over a TCP rendezvous on this node; torchrun's variables):
#   for i in $(seq 0 7); do RANK=$i LOCAL_RANK=$i WORLD_SIZE=8 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \
#     "$mimflow" pretrain … & done; wait
