"""Stage 0: train a base tokenizer (VQGAN or KL VAE) from scratch on an image folder.

    python run_scripts/base_tokenizer_pretrain.py --model vqgan_demo [--data_path datasets/demo]
        [--steps 1000] [--batch_size 8] [--perceptual none|lpips|offline_effnet] [--output_dir DIR] [--resume auto]

Writes DIR/checkpoint-last.pth (full training state, resumable) and DIR/<model>.ckpt (weights + config);
both load with `create_base_tokenizer(<model>, pretrained_ckpt_path=...)`. TensorBoard logs in DIR.

Training runs in the engine's trainer (engine/trainer.py) with stage 0 (engine/stages/base_tokenizer.py),
as stages 1 and 2 do: atomic checkpoints, --resume, SIGINT/SIGTERM saves, the output-folder lock,
precision and torchrun. This file maps its flags onto that trainer and finishes the model afterwards
(latent-scale calibration, the weights file, a validation L1 / PSNR).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
import yaml

from base_tokenizers import create_base_tokenizer, default_checkpoint_path, list_base_tokenizers
from base_tokenizers.checkpoint import own_checkpoint
from engine.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, validate
from engine.data import DataError, build_dataset, build_loader
from engine.run_lock import OutputDirLocked
from engine.stages.base_tokenizer import (
    BaseTokenizerStage,
    BaseTokenizerStageConfig,
    calibrate_latent_scale,
    evaluate_reconstruction,
)
from engine.trainer import EXIT_OK, NonFiniteLossError, Trainer
from modules.io import CheckpointError, atomic_save, atomic_write_text
from modules.losses import PERCEPTUAL_CHOICES, PerceptualWeightsMissing, check_perceptual_weights

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO_ROOT / "datasets" / "demo"
LAST = "checkpoint-last.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vqgan_demo", choices=list_base_tokenizers(), help="base tokenizer to train")
    p.add_argument("--data_path", type=Path, default=DEMO_DATA, help="folder with train/ (and val/) ImageFolders")
    p.add_argument("--input_size", type=int, default=None, help="image side; default: the config's resolution")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="tokenizer_overrides",
                   help="override fields of the tokenizer config, e.g. --set ch=64 ch_mult=[1,2,2,4]")
    p.add_argument("--steps", type=int, default=1000,
                   help="optimizer steps of the autoencoder (with --time_budget_s: the most it may take)")
    p.add_argument("--time_budget_s", type=float, default=0.0,
                   help="> 0: train for about this many seconds: after --budget_measure_s of steps the step "
                        "count is set from the measured speed (at least --min_steps, at most --steps); the lr "
                        "is constant, so nothing else changes. A resumed run keeps the count it chose")
    p.add_argument("--min_steps", type=int, default=1, help="fewest steps a --time_budget_s run takes")
    p.add_argument("--budget_measure_s", type=float, default=10.0, help="seconds of steps that size the budget")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="Adam lr of autoencoder and discriminator (5e-4 did not learn the demo VQGAN)")
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.9), help="Adam betas (taming)")
    p.add_argument("--perceptual", choices=PERCEPTUAL_CHOICES, default=None,
                   help="default: none for *_demo models (no VGG weights offline), lpips otherwise")
    p.add_argument("--disc_start", type=int, default=None, help="step the GAN starts; default: half of --steps")
    defaults = BaseTokenizerStageConfig()
    for name in ("disc_weight", "perceptual_weight", "codebook_weight", "kl_weight", "l1_weight"):
        p.add_argument(f"--{name}", type=float, default=getattr(defaults, name))
    p.add_argument("--dead_code_restart", action=argparse.BooleanOptionalAction, default=defaults.dead_code_restart,
                   help="VQGAN collapse guard: restart codes unused for --restart_window steps")
    p.add_argument("--restart_window", type=int, default=defaults.restart_window)
    p.add_argument("--calibrate_scale", action=argparse.BooleanOptionalAction, default=None,
                   help="VAE bases: set the latent scale to 1 / std of the trained latents (default: on for "
                        "patch_vae_demo, off for the release-sized VAEs whose scale 0.2325 is fixed)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="autocast precision; auto: bf16 where measurably faster than fp32 (a probe on CPUs; "
                        "~100x slower on CPUs without native bf16), fp32 otherwise")
    p.add_argument("--output_dir", type=Path, default=None, help="default: output_dir/base_tokenizer_<model> (git-ignored)")
    p.add_argument("--resume", default=None, help="checkpoint path, or 'auto' = output_dir/checkpoint-last.pth if present")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--image_log_every", type=int, default=500, help="steps between TensorBoard grids (0 = off)")
    p.add_argument("--save_every", type=int, default=500, help="steps between checkpoint-last.pth refreshes")
    p.add_argument("--save_as_default", action="store_true",
                   help="also write the weights to base_tokenizers/pretrained_models/<model>.ckpt, where "
                        "create_base_tokenizer(..., 'default') and the KARL training scripts look")
    p.add_argument("--eval_batches", type=int, default=25, help="val batches for the final L1 / PSNR (0 = skip)")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default); 1 is often faster on a busy machine")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    args = p.parse_args(argv)
    if args.perceptual is None:
        args.perceptual = "none" if args.model.endswith("_demo") else "lpips"
    # default GAN start: half the run (with --time_budget_s: half the steps the budget decides)
    args.disc_start_default = args.disc_start is None
    if args.disc_start is None:
        args.disc_start = args.steps // 2
    if args.output_dir is None:
        args.output_dir = REPO_ROOT / "output_dir" / f"base_tokenizer_{args.model}"
    if args.time_budget_s < 0:
        p.error(f"--time_budget_s must be >= 0, got {args.time_budget_s}")
    for name in ("steps", "batch_size", "restart_window", "log_every", "save_every", "min_steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    return args


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)  # numbers, booleans and [lists] as YAML reads them
    return out


def stage_config(args: argparse.Namespace) -> BaseTokenizerStageConfig:
    names = {f.name for f in fields(BaseTokenizerStageConfig)}
    cfg = BaseTokenizerStageConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.disc_start_follows_budget = args.disc_start_default
    return cfg


def build_data(args: argparse.Namespace, input_size: int):
    """The training set (the trainer batches and shuffles it) and a validation loader (or None)."""
    root = args.data_path
    if not (root / "train").is_dir():
        hint = (f"; create the demo data with `python run_scripts/prepare_demo_data.py --output_dir {root}`"
                if root == DEMO_DATA else "")
        raise DataError(f"no training images: {root / 'train'} is not a folder (expected <data_path>/train/<class>/"
                        f"<image>){hint}")
    train = build_dataset(root, "train", input_size)
    if len(train) < args.batch_size:
        raise DataError(f"{root / 'train'} has {len(train)} images, fewer than --batch_size {args.batch_size}")
    val = build_dataset(root, "val", input_size) if (root / "val").is_dir() else None
    val_loader = build_loader(val, args.batch_size, shuffle=False, drop_last=False) if val is not None else None
    return train, val_loader


def train_config(args: argparse.Namespace, input_size: int, resume: Path | None) -> TrainConfig:
    """The trainer's settings for stage 0: Adam(W without decay) at a constant lr, no clipping, a run of
    --steps optimizer steps (max_steps; the epoch count is set from the data once it is loaded)."""
    cfg = TrainConfig(
        stage="base_tokenizer",
        model=ModelConfig(model="", base_tokenizer=args.model),
        data=DataConfig(data_path=str(args.data_path), input_size=input_size, num_workers=args.num_workers),
        optim=OptimConfig(batch_size=args.batch_size, epochs=1, warmup_epochs=0.0, lr=args.lr, min_lr=args.lr,
                          weight_decay=0.0, betas=list(args.betas), grad_clip=None),
        output_dir=str(args.output_dir), resume=str(resume) if resume else None, seed=args.seed,
        device=args.device, precision=args.precision, log_every=args.log_every,
        image_log_every=args.image_log_every, save_every=0, save_last_every_steps=args.save_every,
        max_steps=args.steps)
    validate(cfg)
    return cfg


def keep_budget_steps(args: argparse.Namespace, resume: Path | None) -> None:
    """A resumed --time_budget_s run keeps the step count (and GAN start) its budget chose."""
    budget_file = args.output_dir / "step_budget.json"
    if args.time_budget_s > 0 and resume is not None and budget_file.is_file():
        chosen = json.loads(budget_file.read_text())
        args.steps = int(chosen["steps"])
        if args.disc_start_default and "disc_start" in chosen:
            args.disc_start = int(chosen["disc_start"])
        args.time_budget_s = 0.0  # decided: nothing left to measure
        print(f"[stage0] time budget: keeping the {args.steps} steps chosen before the interruption", flush=True)
    elif args.time_budget_s > 0:
        print(f"[stage0] time budget {args.time_budget_s:.0f} s: the step count (at most {args.steps}) is "
              f"set from the speed of the first ~{args.budget_measure_s:.0f} s", flush=True)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)  # the tokenizer's initial weights
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    check_perceptual_weights(args.perceptual)  # before anything slow
    resume = args.output_dir / LAST if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if args.resume == "auto" and not resume.is_file():
        resume = None
    elif resume is not None and not resume.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file")
    overrides = parse_overrides(args.tokenizer_overrides)
    if args.input_size:
        overrides["resolution"] = args.input_size
    # a resumed run rebuilds the size its checkpoint records; the trainer then loads the full state
    tokenizer = create_base_tokenizer(args.model, pretrained_ckpt_path=resume, **overrides)
    input_size = tokenizer.config.resolution
    tokenizer.grid_size(input_size)  # clear error when the size does not divide by f
    train_set, val_loader = build_data(args, input_size)
    keep_budget_steps(args, resume)
    if args.disc_start_default:  # default GAN start: half the run
        args.disc_start = args.steps // 2
    cfg = train_config(args, input_size, resume)
    stage = BaseTokenizerStage(stage_config(args))
    trainer = Trainer(cfg, stage, model=tokenizer, dataset=train_set)
    cfg.optim.epochs = max(1, math.ceil(args.steps / trainer.steps_per_epoch))  # the lr is constant: only the loop's end
    if resume is not None:
        print(f"[stage0] resumed from {resume} at step {stage.steps}", flush=True)
    device = trainer.device
    n_params = sum(p.numel() for p in tokenizer.parameters())
    print(f"[stage0] {args.model}: {n_params / 1e6:.2f}M parameters, {input_size} px, grid "
          f"{tokenizer.grid_size(input_size)}x{tokenizer.grid_size(input_size)}, {args.steps} steps of "
          f"{args.batch_size} on {device}, perceptual={args.perceptual}, GAN from step {stage.cfg.disc_start}",
          flush=True)
    start = time.perf_counter()
    if stage.steps < args.steps:
        code = trainer.fit()
    else:  # the run is complete: only the finishing below
        code = EXIT_OK
        trainer.release_output_dir()
    if code != EXIT_OK:  # SIGINT / SIGTERM: checkpoint-last.pth holds the last finished step
        print(f"[stage0] stopped by signal {code - 128} after step {stage.steps}; saved {args.output_dir / LAST}; "
              f"continue with --resume auto", flush=True)
        raise SystemExit(code)
    seconds = time.perf_counter() - start
    step = stage.steps
    result = {"model": args.model, "steps": step, "seconds": round(seconds, 1)}
    tokenizer.train()
    calibrate = args.calibrate_scale if args.calibrate_scale is not None else tokenizer.calibrate_scale_after_training
    if calibrate:
        loader = build_loader(train_set, args.batch_size, num_workers=args.num_workers, seed=args.seed)
        result["latent_scale"] = calibrate_latent_scale(tokenizer, loader, device)
        print(f"[stage0] latent scale set to {result['latent_scale']:.4g} (1 / std of the posterior means)")
    final = args.output_dir / f"{args.model}.ckpt"
    atomic_save(own_checkpoint(args.model, tokenizer, step=step), final)
    result["checkpoint"] = str(final)
    if args.save_as_default:
        default = default_checkpoint_path(args.model)
        atomic_save(own_checkpoint(args.model, tokenizer, step=step), default)
        result["default_checkpoint"] = str(default)
    if val_loader is not None and args.eval_batches > 0:
        metrics = evaluate_reconstruction(tokenizer, val_loader, device, args.eval_batches)
        result.update({f"val_{k}": v for k, v in metrics.items()})
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(args.output_dir)) as writer:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, step)
    atomic_write_text(args.output_dir / "result.json", json.dumps(result, indent=2) + "\n")
    print(f"[stage0] done in {seconds:.0f} s: " + json.dumps(result))
    print(f"[stage0] use it: create_base_tokenizer({args.model!r}, pretrained_ckpt_path={str(final)!r})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except (DataError, CheckpointError, PerceptualWeightsMissing, OutputDirLocked, ValueError) as err:
        print(f"base_tokenizer_pretrain: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:  # checkpoint-last.pth keeps the last good step
        print(f"base_tokenizer_pretrain: error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
