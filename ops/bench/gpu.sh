#!/usr/bin/env bash
# The GPU form of the throughput suite: every stage on the CUDA machine, with the peers in the same invocation, one table.
#   here (project root):  bash ops/bench/gpu.sh pack        # the release without CPU libtorch + the peers into .gpu/
#   then, device run with carry [".gpu"]:  bash ops/bench/gpu.sh run "$OUT"
# "run" writes under OUT: bench-gpu.json (every figure, ratios, peers), bench-gpu.txt (the table), check.txt (the
# comparison with ops/bench/baseline-gpu.json when that file exists), machine.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  pack)
    bash ops/package.sh --no-libtorch --out .gpu
    cp ../shared/peers/*.py .gpu/
    echo "packed into .gpu/; now: device run (carry [\".gpu\"]) bash ops/bench/gpu.sh run \"\$OUT\""
    ;;
  run)
    out=${2:-${OUT:-.}}
    mkdir -p "$out"
    source ops/gpu/release.sh
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      python3 -c 'import torch; print("pytorch", torch.__version__, "cuda", torch.version.cuda)'; nproc; } > "$out/machine.txt"
    cat "$out/machine.txt"
    mimflow bench --device cuda --workers "$(nproc)" --repeats 3 --peers .gpu --python python3 \
      --work /tmp/mimflow-bench --json "$out/bench-gpu.json" 2>&1 | tee "$out/bench-gpu.txt"
    if [[ -f ops/bench/baseline-gpu.json ]]; then
      mimflow bench --results "$out/bench-gpu.json" --check ops/bench/baseline-gpu.json 2>&1 | tee "$out/check.txt" || true
    fi
    ;;
  *)
    echo "usage: bash ops/bench/gpu.sh pack | run OUT_DIR" >&2
    exit 2
    ;;
esac
