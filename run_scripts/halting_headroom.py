"""How much could KARL's halting head learn on these images? The LTC halting BCE of three ideal predictors.

    python run_scripts/halting_headroom.py --ckpt CHECKPOINT --data_path FOLDER [--max_images 192]
        [--batch_size 32] [--budgets 4 8 ... 64] [--output headroom.json]

Runs fixed-budget passes at every EIC budget <= N (default: the model's budget step up to N) and prints the
mean BCE of predictors that know the token position / + the condition bin / + the image's own error curve
(engine/evaluation/halting_headroom.py). Compare with the training log's `ltc/halt`: a head at the
"position" value has learned nothing conditional. Exit 2 with a message on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout too

from engine.evaluation.halting_headroom import error_curves, ideal_halting_bce  # noqa: E402
from engine.evaluation.inputs import EvaluationError, load_eval_data  # noqa: E402
from engine.evaluation.main import _device, load_model  # noqa: E402
from engine.evaluation.runner import max_budget  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file (or a name load_tokenizer knows)")
    p.add_argument("--data_path", required=True, help="image folder (a val/ ImageFolder split or custom images)")
    p.add_argument("--max_images", type=int, default=192, help="first N images (sorted by path)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="default: budget step, 2 steps, ..., the LTC budget")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--output", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    try:
        if not Path(args.data_path).is_dir():
            raise EvaluationError(f"--data_path folder not found: {args.data_path}")
        device = _device(args.device)
        model = load_model(args.ckpt, device)
        n = max_budget(model)  # the LTC budget: N unless the model was trained with a smaller one
        budgets = args.budgets or list(range(model.conditioning.budget_step, n + 1, model.conditioning.budget_step))
        if min(budgets) < 1 or max(budgets) > n:
            raise EvaluationError(f"--budgets must be in [1, {n}] (the model's LTC budget), got {budgets}")
        data, _ = load_eval_data(args.data_path, model.config.input_size, "auto", args.batch_size, args.max_images)
        curves = error_curves(model, data, budgets, device)
        bin_idx = model.conditioning.snap(torch.from_numpy(curves).flatten()).view(curves.shape).numpy()
        result = ideal_halting_bce(bin_idx, budgets, n)
    except (EvaluationError, ValueError, OSError) as err:
        print(f"halting_headroom: error: {err}", file=sys.stderr)
        return 2
    result["mean_l1_per_budget"] = [round(float(v), 5) for v in curves.mean(0)]
    print(f"images {result['images']}, budgets {budgets[0]}..{budgets[-1]}, condition bins crossed per image "
          f"{result['bins_per_image']:.2f}")
    print(f"ideal LTC halting BCE: position {result['position']:.3f} | + bin {result['position_and_bin']:.3f} | "
          f"+ image curve {result['image_curve']:.3f}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
