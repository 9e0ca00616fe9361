#!/usr/bin/env bash
# Stage 1, latent-distillation pretraining: the official recipe (batch 64 per GPU, 200 epochs, warmup 20,
# blr 1e-4, wd 0.05, quantised + factorised 1D tokens, karl_small on the VQGAN), launched with torchrun.
#   TRAIN_DATA_DIR  ImageFolder root (required)      OUTPUT_DIR  default ./output_dir/latent_distillation_pretrain/karl_small_vqgan_quantized_latents
#   NPROC_PER_NODE  processes (GPUs) on this node (default 8)   NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT for several nodes
# Extra arguments are passed through and win over the recipe, e.g. on a CPU with the demo data (make it first:
# .venv/bin/python run_scripts/prepare_demo_data.py --output_dir datasets/demo); karl_demo is sized for 64 px:
#   NPROC_PER_NODE=1 TRAIN_DATA_DIR=datasets/demo bash run_scripts/latent_distillation_pretrain.sh \
#       --model karl_demo --base_tokenizer vqgan_demo --input_size 64 --num_workers 0 --batch_size 16 --epochs 1
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$HERE/_venv.sh" ]; then source "$HERE/_venv.sh"; else REPO_ROOT="$(cd "$HERE/.." && pwd)"; VENV_PY="$REPO_ROOT/.venv/bin/python"; fi
: "${TRAIN_DATA_DIR:?set TRAIN_DATA_DIR to the training images (an ImageFolder root with train/ inside)}"
OUTPUT_DIR="${OUTPUT_DIR:-./output_dir/latent_distillation_pretrain/karl_small_vqgan_quantized_latents}"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"  # -m engine.main_train from any working directory
exec "$VENV_PY" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="${NPROC_PER_NODE:-8}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-12345}" \
    -m engine.main_train --stage latent_distillation \
    --batch_size 64 \
    --num_workers 10 \
    --model karl_small \
    --base_tokenizer vqgan \
    --quantize_latent \
    --factorize_latent \
    --epochs 200 \
    --warmup_epochs 20 \
    --blr 1.e-4 --weight_decay 0.05 \
    --output_dir "$OUTPUT_DIR" \
    --data_path "$TRAIN_DATA_DIR" \
    "$@"
