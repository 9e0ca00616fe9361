"""Command line of the evaluation: `python run_scripts/evaluate.py --checkpoint CKPT --data_path DIR --output_dir OUT`.

Bad input (missing checkpoint, config mismatch, empty folder, unreadable image, bad option values) ends
with one `error: ...` line on stderr and exit status 2; never a deep traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from modules.device import resolve_device

from .fixed import OFFICIAL_BUDGET_STEPS
from .inputs import DATA_KINDS, EvaluationError, load_eval_data
from .perceptual_metrics import PerceptualMetrics
from .pipeline import SECTIONS, EvalSettings, run_evaluation
from .variable import DEFAULT_EPSILONS

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    from kolmogorov_tokenizers.cli import DeprecatedAlias, ListOption  # lists: space- or comma-separated

    p = argparse.ArgumentParser(
        prog="karl-evaluate",
        description="Evaluate a KARL tokenizer: fixed and variable allocation, epsilon calibration, search "
        "baseline, complexity analysis. Writes metrics.json, per_image.csv, plots and report.md.",
    )
    # One spelling across `karl`, this script and the training scripts: --checkpoint (--ckpt still works).
    p.add_argument("--checkpoint", default=None, help="(required) checkpoint file, or 'demo' (the shipped demo model)")
    p.add_argument("--ckpt", dest="checkpoint", action=DeprecatedAlias, new="--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--data_path", required=True, help="folder with a val/ ImageFolder split or custom images")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--data_kind", default="auto", choices=DATA_KINDS,
                   help="val: CenterCrop, no resize (official); custom: Resize + CenterCrop; auto: val when "
                   "DATA/val exists, custom for a flat folder")
    p.add_argument("--ood_data_path", default=None, help="optional out-of-distribution folder (complexity)")
    p.add_argument("--ood_data_kind", default="auto", choices=DATA_KINDS)
    p.add_argument("--max_images", type=int, default=None, help="first N images (sorted by path)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--budgets", type=int, action=ListOption, default=None,
                   help=f"fixed-allocation budgets (default N/{OFFICIAL_BUDGET_STEPS} * k, k = 1..{OFFICIAL_BUDGET_STEPS})")
    p.add_argument("--epsilons", type=float, action=ListOption, default=list(DEFAULT_EPSILONS),
                   help="variable-allocation target errors (mean L1 in [0, 1] pixels)")
    p.add_argument("--search_budgets", type=int, action=ListOption, default=None,
                   help="search baseline budget list (default N/16 * k, k = 1..16)")
    p.add_argument("--search_epsilons", type=float, action=ListOption, default=None,
                   help="epsilons for the search baseline (default: --epsilons)")
    p.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, help="sections to skip")
    p.add_argument("--input_size", type=int, default=None,
                   help="expected image size; an error if the checkpoint's differs (default: the checkpoint's)")
    p.add_argument("--model", default=None, help="expected model preset; an error if the checkpoint's differs")
    p.add_argument("--no_perceptual", action="store_true", help="skip LPIPS and rFID")
    p.add_argument("--fd_effnet", action="store_true",
                   help="also a Frechet distance on offline EfficientNet-Lite0 features (FD-EffNetLite0; not FID)")
    p.add_argument("--allow_download", action="store_true",
                   help="let lpips / pytorch-fid download missing weights (needs network access)")
    p.add_argument("--grid_images", type=int, default=9,
                   help="images shown in the reconstruction grids, one per family in turn (9: every demo family)")
    return p


def load_model(ckpt: str, device: torch.device, input_size: Optional[int] = None, model_name: Optional[str] = None):
    """The tokenizer of `ckpt`, in eval mode on `device`; EvaluationError with the reason otherwise."""
    path = Path(ckpt)
    looks_like_path = path.suffix != "" or "/" in ckpt or "\\" in ckpt
    if looks_like_path and not path.is_file():
        raise EvaluationError(f"checkpoint not found: {path}")
    try:
        from kolmogorov_tokenizers import load_tokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_tokenizer(ckpt)
    except EvaluationError:
        raise
    except Exception as err:  # any failure of loading is the user's checkpoint: say which and why
        raise EvaluationError(f"cannot load checkpoint {ckpt}: {type(err).__name__}: {err}") from err
    config = getattr(model, "config", None)
    if input_size is not None and getattr(config, "input_size", input_size) != input_size:
        raise EvaluationError(f"config mismatch: checkpoint {ckpt} takes {config.input_size} px images, "
                              f"--input_size is {input_size}")
    if model_name is not None and getattr(config, "model_name", model_name) != model_name:
        raise EvaluationError(f"config mismatch: checkpoint {ckpt} holds model {config.model_name!r}, "
                              f"--model is {model_name!r}")
    return model.to(device).eval()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None:  # not argparse's required=: the deprecated --ckpt also sets it
        parser.error("the following arguments are required: --checkpoint")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = resolve_device(args.device)  # DeviceError is a ValueError: one line, EXIT_BAD_INPUT
        for name, folder in (("--data_path", args.data_path), ("--ood_data_path", args.ood_data_path)):
            if folder is not None and not Path(folder).is_dir():  # before loading a large model
                raise EvaluationError(f"{name} folder not found: {folder}")
        model = load_model(args.checkpoint, device, args.input_size, args.model)
        size = model.config.input_size
        data, kind = load_eval_data(args.data_path, size, args.data_kind, args.batch_size, args.max_images,
                                    args.num_workers)
        ood = None
        if args.ood_data_path:
            ood, _ = load_eval_data(args.ood_data_path, size, args.ood_data_kind, args.batch_size,
                                    args.max_images, args.num_workers)
        perceptual = PerceptualMetrics(device, allow_download=args.allow_download, enabled=not args.no_perceptual,
                                       fd_effnet=args.fd_effnet)
        settings = EvalSettings(
            fixed_budgets=args.budgets,
            epsilons=args.epsilons,
            search_budgets=args.search_budgets,
            search_epsilons=args.search_epsilons,
            skip=args.skip,
            grid_images=args.grid_images,
            meta={"checkpoint": str(args.checkpoint), "data": str(args.data_path), "data_kind": kind,
                  "ood_data": args.ood_data_path, "batch_size": args.batch_size, "input_size": size,
                  "model": getattr(model.config, "model_name", None)},
        )
        metrics = run_evaluation(model, data, args.output_dir, device, settings, perceptual, ood)
    except (EvaluationError, ValueError, OSError) as err:
        # ValueError covers the model's and the data pipeline's input checks (DataError is one)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _print_summary(metrics, Path(args.output_dir))
    return 0


def _print_summary(metrics: dict, output_dir: Path) -> None:
    meta = metrics["meta"]
    print(f"evaluated {meta['num_images']} images in {meta['seconds_total']:.1f} s on {meta['device']}")
    for b, r in metrics.get("fixed", {}).get("per_budget", {}).items():
        print(f"  fixed  budget {b:>4}: tokens {r['tokens']:.1f}  L1 {r['l1']:.4f}  PSNR {r['psnr']:.2f}  "
              f"SSIM {r['ssim']:.4f}")
    for e, r in metrics.get("variable", {}).get("per_epsilon", {}).items():
        print(f"  variable eps {e:>5}: tokens {r['tokens']:.1f}  L1 {r['l1']:.4f}  PSNR {r['psnr']:.2f}  "
              f"SSIM {r['ssim']:.4f}  {r['images_per_second'] or 0:.1f} images/s")
    for e, r in metrics.get("search", {}).get("per_epsilon", {}).items():
        print(f"  search eps {e:>5}: search {r['search']['mean_tokens']:.1f} tokens in "
              f"{r['search']['mean_passes']:.2f} passes vs KARL {r['karl']['mean_tokens']:.1f} in 1; "
              f"agreement {r['agreement_within_one_step']:.2f}; speed-up {r['speedup'] or 0:.2f}x")
    for line in meta["skipped"]:
        print(f"  {line}")
    print(f"wrote {output_dir / 'metrics.json'}, per_image.csv, plots/ and report.md")


if __name__ == "__main__":
    sys.exit(main())
