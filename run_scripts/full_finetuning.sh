#!/usr/bin/env bash
# Stage 2, full finetuning: the official recipe (batch 18 per GPU, 400 epochs, warmup 20, blr 1e-4, wd 0.05)
# from the stage-1 checkpoint-last.pth, launched with torchrun.
#   TRAIN_DATA_DIR  ImageFolder root (required)      OUTPUT_DIR  default ./output_dir/full_finetuning/karl_small_vqgan_quantized_latents
#   FINETUNE_CKPT   stage-1 checkpoint (default ./output_dir/latent_distillation_pretrain/karl_small_vqgan_quantized_latents/checkpoint-last.pth)
#   NPROC_PER_NODE  processes (GPUs) on this node (default 8)   NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT for several nodes
# Extra arguments are passed through and win over the recipe (e.g. --finetune other.pth, gan.perceptual=none).
# On a CPU, after the stage-1 example in latent_distillation_pretrain.sh (same working directory):
#   NPROC_PER_NODE=1 TRAIN_DATA_DIR=datasets/demo bash run_scripts/full_finetuning.sh \
#       --model karl_demo --base_tokenizer vqgan_demo --input_size 64 --num_workers 0 --batch_size 16 --epochs 1 \
#       gan.perceptual=none
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$HERE/_venv.sh" ]; then source "$HERE/_venv.sh"; else REPO_ROOT="$(cd "$HERE/.." && pwd)"; VENV_PY="$REPO_ROOT/.venv/bin/python"; fi
: "${TRAIN_DATA_DIR:?set TRAIN_DATA_DIR to the training images (an ImageFolder root with train/ inside)}"
OUTPUT_DIR="${OUTPUT_DIR:-./output_dir/full_finetuning/karl_small_vqgan_quantized_latents}"
FINETUNE_CKPT="${FINETUNE_CKPT:-./output_dir/latent_distillation_pretrain/karl_small_vqgan_quantized_latents/checkpoint-last.pth}"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"  # -m engine.main_train from any working directory
exec "$VENV_PY" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="${NPROC_PER_NODE:-8}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-12345}" \
    -m engine.main_train --stage full_finetuning \
    --batch_size 18 \
    --model karl_small \
    --epochs 400 \
    --warmup_epochs 20 \
    --blr 1.e-4 --weight_decay 0.05 \
    --base_tokenizer vqgan \
    --quantize_latent \
    --factorize_latent \
    --output_dir "$OUTPUT_DIR" \
    --finetune "$FINETUNE_CKPT" \
    --data_path "$TRAIN_DATA_DIR" \
    "$@"
