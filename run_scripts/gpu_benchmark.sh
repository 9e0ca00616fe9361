#!/usr/bin/env bash
# The benchmark suite on one CUDA GPU (H200-class) at karl_small size, bf16, random weights (no internet):
#   bash run_scripts/gpu_benchmark.sh OUT            # OUT = a .json file, or a folder (-> OUT/gpu_benchmark.json)
# Runs benchmarks/run.py --device cuda --precision bf16 --presets karl_small (training: reference vs fast path,
# fp32 and bf16, stages 1 and 2; adaptive encode vs search; decoder masked vs dropped; matmul peak;
# channels_last). Budget: under 5 minutes (a hard `timeout` of KARL_GPU_BENCH_TIMEOUT s, default 290, stops it;
# run.py writes its JSON after every section, so a stopped run keeps what it finished). The printed table
# also goes to <json>.log. KARL_BENCH_COMPILE=1 adds torch.compile timing (compile takes extra minutes).
# Python: KARL_PYTHON, else <repo>/.venv/bin/python, else python3 (needs torch with CUDA; nothing installed).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash run_scripts/gpu_benchmark.sh OUT   (OUT = results .json path or an existing folder)" >&2
    exit 2
fi
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$1"
if [ -d "$out" ]; then out="$out/gpu_benchmark.json"; fi
mkdir -p "$(dirname "$out")"
PY="${KARL_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PY="$REPO_ROOT/.venv/bin/python"; else PY=python3; fi
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_benchmark.sh: error: $PY has no torch with a usable CUDA device (set KARL_PYTHON)" >&2
    exit 1
fi
extra=()
if [ "${KARL_BENCH_COMPILE:-0}" = "1" ]; then extra+=(--compile); fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>/dev/null || true
timeout "${KARL_GPU_BENCH_TIMEOUT:-290}" "$PY" "$REPO_ROOT/benchmarks/run.py" --device cuda --precision bf16 \
    --presets karl_small --output "$out" "${extra[@]}" 2>&1 | tee "${out%.json}.log"
