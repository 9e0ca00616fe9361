#!/usr/bin/env bash
# Stage 0: train a base tokenizer from scratch. Every option of the python script passes through, e.g.
#   bash run_scripts/base_tokenizer_pretrain.sh --model vqgan_demo --steps 1500
#   bash run_scripts/base_tokenizer_pretrain.sh --model vqgan --data_path /data/imagenet --perceptual lpips
# Defaults: --model vqgan_demo on datasets/demo (create it with run_scripts/prepare_demo_data.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
if [[ -x "$ROOT/.venv/bin/python" && "${PYTHON}" == "python" ]]; then PYTHON="$ROOT/.venv/bin/python"; fi
exec "$PYTHON" "$ROOT/run_scripts/base_tokenizer_pretrain.py" "$@"
