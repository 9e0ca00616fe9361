"""Stage 0: train a base tokenizer (VQGAN or KL VAE) from scratch on an image folder.

    python run_scripts/base_tokenizer_pretrain.py --model vqgan_demo [--data_path datasets/demo]
        [--steps 1000] [--batch_size 8] [--perceptual none|lpips|offline_effnet] [--output_dir DIR] [--resume auto]

Writes DIR/checkpoint-last.pth (full training state, resumable) and DIR/<model>.ckpt (weights + config);
both load with `create_base_tokenizer(<model>, pretrained_ckpt_path=...)`. TensorBoard logs in DIR.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch
import yaml

from base_tokenizers import create_base_tokenizer, default_checkpoint_path, list_base_tokenizers
from base_tokenizers.checkpoint import own_checkpoint
from engine.data import DataError, build_dataset, build_loader
from engine.precision import resolve_precision
from engine.schedule_budget import StepBudget, fmt_duration
from engine.stages.base_tokenizer import (
    BaseTokenizerStageConfig,
    BaseTokenizerTrainingLoss,
    calibrate_latent_scale,
    evaluate_reconstruction,
)
from modules.io import CheckpointError, atomic_save, atomic_write_text, safe_torch_load
from modules.losses import PERCEPTUAL_CHOICES, PerceptualWeightsMissing

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
    return BaseTokenizerStageConfig(**{k: v for k, v in vars(args).items() if k in names})


def build_data(args: argparse.Namespace, input_size: int):
    root = args.data_path
    if not (root / "train").is_dir():
        hint = (f"; create the demo data with `python run_scripts/prepare_demo_data.py --output_dir {root}`"
                if root == DEMO_DATA else "")
        raise DataError(f"no training images: {root / 'train'} is not a folder (expected <data_path>/train/<class>/"
                        f"<image>){hint}")
    train = build_dataset(root, "train", input_size)
    if len(train) < args.batch_size:
        raise DataError(f"{root / 'train'} has {len(train)} images, fewer than --batch_size {args.batch_size}")
    loader = build_loader(train, args.batch_size, num_workers=args.num_workers, seed=args.seed)
    val = build_dataset(root, "val", input_size) if (root / "val").is_dir() else None
    val_loader = build_loader(val, args.batch_size, shuffle=False, drop_last=False) if val is not None else None
    return loader, val_loader


def resolve_stage0_precision(setting: str, device: torch.device) -> str:
    """The shared resolver (it prints the choice and why); stage 0 has no GradScaler, so where it answers
    fp16 (auto on CUDA) this stage takes bf16 when the GPU has it and fp32 otherwise."""
    precision = resolve_precision(setting, device)
    if precision == "fp16":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        print(f"[precision] stage 0 has no fp16 loss scaling: {precision}", flush=True)
    return precision


def save(path: Path, args, tokenizer, losses, opt_ae, opt_d, step: int) -> None:
    atomic_save(own_checkpoint(args.model, tokenizer, discriminator=losses.discriminator.state_dict(),
                               optimizer=opt_ae.state_dict(), optimizer_disc=opt_d.state_dict(), step=step,
                               codebook_last_used=None if losses.monitor is None else losses.monitor.last_used,
                               args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}),
                path)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    resume = args.output_dir / LAST if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if args.resume == "auto" and not resume.is_file():
        resume = None
    elif resume is not None and not resume.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file")
    overrides = parse_overrides(args.tokenizer_overrides)
    if args.input_size:
        overrides["resolution"] = args.input_size
    tokenizer = create_base_tokenizer(args.model, pretrained_ckpt_path=resume, **overrides)
    input_size = tokenizer.config.resolution
    tokenizer.grid_size(input_size)  # clear error when the size does not divide by f
    tokenizer.set_trainable(True).to(device).train()
    losses = BaseTokenizerTrainingLoss(stage_config(args), tokenizer).to(device)
    opt_ae = torch.optim.Adam(tokenizer.parameters(), lr=args.lr, betas=tuple(args.betas))
    opt_d = torch.optim.Adam(losses.discriminator.parameters(), lr=args.lr, betas=tuple(args.betas))
    step = 0
    if resume is not None:
        state = safe_torch_load(resume)
        losses.discriminator.load_state_dict(state["discriminator"])
        opt_ae.load_state_dict(state["optimizer"])
        opt_d.load_state_dict(state["optimizer_disc"])
        step = int(state["step"])
        if losses.monitor is not None and state.get("codebook_last_used") is not None:
            losses.monitor.last_used, losses.monitor.step = state["codebook_last_used"], step
        print(f"[stage0] resumed from {resume} at step {step}")

    loader, val_loader = build_data(args, input_size)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(args.output_dir))
    n_params = sum(p.numel() for p in tokenizer.parameters())
    print(f"[stage0] {args.model}: {n_params / 1e6:.2f}M parameters, {input_size} px, grid "
          f"{tokenizer.grid_size(input_size)}x{tokenizer.grid_size(input_size)}, {args.steps} steps of "
          f"{args.batch_size} on {device}, perceptual={args.perceptual}, GAN from step {args.disc_start}")
    precision = resolve_stage0_precision(args.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    # SIGINT/SIGTERM finish the current step, save checkpoint-last.pth and exit 128 + signal (130 / 143), so
    # an interrupted run loses nothing and `--resume auto` continues it (as the engine's trainer does).
    stop_signal: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
    budget = None
    budget_file = args.output_dir / "step_budget.json"  # a resumed run keeps the step count it chose
    if args.time_budget_s > 0:
        if resume is not None and budget_file.is_file():
            chosen = json.loads(budget_file.read_text())
            args.steps = int(chosen["steps"])
            if args.disc_start_default and "disc_start" in chosen:
                args.disc_start = losses.cfg.disc_start = int(chosen["disc_start"])
            print(f"[stage0] time budget: keeping the {args.steps} steps chosen before the interruption", flush=True)
        else:
            budget = StepBudget(args.time_budget_s, min_steps=args.min_steps, max_steps=args.steps,
                                measure_s=args.budget_measure_s, first_step=step)
            print(f"[stage0] time budget {args.time_budget_s:.0f} s: the step count (at most {args.steps}) is "
                  f"set from the speed of the first ~{args.budget_measure_s:.0f} s", flush=True)
    start, first_step, last_latent = time.perf_counter(), step, None
    epoch = step // max(1, len(loader))  # a resumed run continues the data order where it stopped
    while step < args.steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            images = batch[0].to(device)
            restarted = losses.maybe_restart_codes(tokenizer, last_latent)  # between optimizer steps
            out, terms = losses.train_step(tokenizer, images, step, opt_ae, opt_d, autocast)
            step += 1
            logs = {k: float(v) for k, v in terms.items()}
            logs.update(losses.codebook_logs(out))
            if losses.monitor is not None:
                logs["codebook/restarted"] = float(restarted)
            last_latent = None if out.latent is None else out.latent.detach()
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
            if budget is not None and budget.update(step) is not None:
                args.steps = budget.decided
                if args.disc_start_default:
                    args.disc_start = losses.cfg.disc_start = args.steps // 2
                atomic_write_text(budget_file, json.dumps({
                    "steps": args.steps, "steps_per_s": budget.steps_per_s, "time_budget_s": args.time_budget_s,
                    "disc_start": args.disc_start}) + "\n")
                print(f"[stage0] measured {budget.steps_per_s:.2f} steps/s ({budget.steps_per_s * args.batch_size:.0f} "
                      f"img/s): {args.steps} steps fit the {args.time_budget_s:.0f} s budget", flush=True)
            if step % args.log_every == 0 or step == args.steps or step == first_step + 1:
                elapsed = time.perf_counter() - start
                rate = (step - first_step) * args.batch_size / elapsed
                eta = (args.steps - step) * elapsed / (step - first_step)
                shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if not k.startswith("gan/logits"))
                print(f"[stage0] step {step}/{args.steps} {shown} | {rate:.1f} img/s | ETA {fmt_duration(eta)}",
                      flush=True)
            if args.image_log_every and step % args.image_log_every == 0:
                from torchvision.utils import make_grid

                grid = torch.cat([images[:8], out.reconstruction[:8].detach().float().clamp(0, 1)])
                writer.add_image("reconstructions", make_grid(grid.cpu(), nrow=min(8, len(images))), step)
            if step % args.save_every == 0 or step == args.steps or stop_signal:
                save(args.output_dir / LAST, args, tokenizer, losses, opt_ae, opt_d, step)
            if stop_signal:
                writer.close()
                print(f"[stage0] stopped by signal {stop_signal[0]} after step {step}; saved "
                      f"{args.output_dir / LAST}; continue with --resume auto", flush=True)
                raise SystemExit(128 + stop_signal[0])
            if step >= args.steps:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    result = {"model": args.model, "steps": step, "seconds": round(seconds, 1)}
    calibrate = args.calibrate_scale if args.calibrate_scale is not None else tokenizer.calibrate_scale_after_training
    if calibrate:
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
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
    writer.close()
    (args.output_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"[stage0] done in {seconds:.0f} s: " + json.dumps(result))
    print(f"[stage0] use it: create_base_tokenizer({args.model!r}, pretrained_ckpt_path={str(final)!r})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except (DataError, CheckpointError, PerceptualWeightsMissing, ValueError) as err:
        print(f"base_tokenizer_pretrain: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
