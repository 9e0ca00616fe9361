"""How much could KARL's halting head learn on these images? The LTC halting BCE of three ideal predictors.

    python -m research.halting_headroom --checkpoint CHECKPOINT --data_path FOLDER [--max_images 192]
        [--batch_size 32] [--budgets 4 8 ... 64] [--epsilons 0.03 0.05 0.07 0.09] [--probe_epsilon 0.05]
        [--output headroom.json]

Runs fixed-budget passes at every EIC budget <= N (default: the model's budget step up to N) and prints the
mean BCE of predictors that know the token position / + the condition bin / + the image's own error curve
(research/halting_probes.py). Compare with the training log's `ltc/halt`: a head at the
"position" value has learned nothing conditional.

Then, per epsilon (and per family when the data has metadata), the model's own token count beside the count
an exactly fitted head would keep under the model's training settings (its EIC budgets, condition
augmentation, halting threshold). Learned far from ideal: the head has not learned yet. Learned close to
ideal: the objective itself asks for that count.

Last, an encoder probe: the leave-one-out R^2 of a ridge regression from the halting head's input (averaged
over the 1D tokens, at --probe_epsilon) to each image's log error (the mean over the budgets). High R^2 with
learned counts far from ideal: the head lags. Low R^2: the encoder does not yet know how hard each image is.
Exit 2 with a message on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from research.halting_probes import (error_curves, halting_inputs, ideal_halting_bce,
                                                ideal_token_counts, ridge_loo_r2)
from evaluation.inputs import EvaluationError, load_eval_data
from evaluation.main import load_model
from evaluation.runner import encode, max_budget
from evaluation.variable import DEFAULT_EPSILONS
from modules.device import resolve_device


def token_count_table(model, data, bins: np.ndarray, curve_budgets: list[int], epsilons: list[float],
                      device: torch.device) -> dict:
    """Learned and ideal token counts per epsilon, for all images and per family (when known).
    bins: (images, len(curve_budgets)) condition bin of each image's error at each budget."""
    n, cond, cfg = max_budget(model), model.conditioning, model.config
    choices = list(cond.eic_budget_choices)
    choice_bins = bins[:, [curve_budgets.index(b) for b in choices]]
    query = cond.snap(torch.tensor(epsilons)).tolist()
    ideal = ideal_token_counts(choice_bins, choices, n, query, len(cfg.epsilon_bins), cfg.halting_threshold,
                               cfg.augmentation_prob if cfg.condition_augmentation else 0.0,
                               cond.augmentation_small_budget)
    learned, ids = [], []
    for batch in data.batches():
        images = batch.images.to(device)
        learned.append(torch.stack([encode(model, images, n, e)[0].num_tokens.float() for e in epsilons], 1))
        ids += batch.ids
    learned = torch.cat(learned).numpy()
    groups = {"all": np.arange(len(ids))}
    families = [str(data.metadata.get(i, {}).get("family", "")) for i in ids]
    for f in sorted(set(families) - {""}):
        groups[f] = np.array([k for k, g in enumerate(families) if g == f])
    table = {"epsilons": epsilons, "budget": n, "groups": {}}
    for name, rows in groups.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN column: no ideal count
            table["groups"][name] = {
                "images": int(len(rows)),
                "learned": [round(float(v), 2) for v in learned[rows].mean(0)],
                # NaN-free mean over the images that training pairs with the bin (None if none is)
                "ideal": [None if np.isnan(v) else round(float(v), 2) for v in np.nanmean(ideal[rows], 0)],
            }
    return table


def encoder_probe(model, data, curves: np.ndarray, epsilon: float, device: torch.device) -> dict:
    """How well the halting head's input predicts each image's log error (see ridge_loo_r2).
    curves: (images, budgets) L1 of the fixed-budget passes; the target is the mean of their logs."""
    probe = {"epsilon": epsilon, "target": "mean over budgets of log L1", "images": int(curves.shape[0]),
             "r2_loo": None, "alpha": None}
    target = np.log(np.clip(curves, 1e-6, None)).mean(1)
    try:
        r2, alpha = ridge_loo_r2(halting_inputs(model, data, epsilon, device), target)
    except ValueError as err:  # too few images, or every image equally hard: report why instead of failing
        probe["skipped"] = str(err)
        return probe
    probe.update(r2_loo=round(r2, 4), alpha=alpha)
    return probe


def _print_table(table: dict) -> None:
    eps = table["epsilons"]
    print(f"token counts of {table['budget']}, learned / ideal (an exactly fitted head):")
    print(f"  {'images':18s} " + " ".join(f"{'eps ' + format(e, 'g'):>13s}" for e in eps))
    for name, g in table["groups"].items():
        cells = [f"{lv:5.1f} / {'  -  ' if iv is None else format(iv, '5.1f')}" for lv, iv in zip(g["learned"], g["ideal"])]
        print(f"  {name + ' (' + str(g['images']) + ')':18s} " + " ".join(f"{c:>13s}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from kolmogorov_tokenizers.cli import DeprecatedAlias

    # one spelling across `karl`, evaluate and the training scripts: --checkpoint (--ckpt still works)
    p.add_argument("--checkpoint", default=None, help="(required) checkpoint file (or a name load_tokenizer knows)")
    p.add_argument("--ckpt", dest="checkpoint", action=DeprecatedAlias, new="--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--data_path", required=True, help="image folder (a val/ ImageFolder split or custom images)")
    p.add_argument("--max_images", type=int, default=192, help="first N images (sorted by path)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="default: budget step, 2 steps, ..., the LTC budget")
    p.add_argument("--epsilons", type=float, nargs="+", default=list(DEFAULT_EPSILONS),
                   help="targets for the learned / ideal token-count table (default: %(default)s)")
    p.add_argument("--probe_epsilon", type=float, default=0.05,
                   help="condition of the pass whose halting-head input the encoder probe reads (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--output", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.checkpoint is None:  # not argparse's required=: the deprecated --ckpt also sets it
        p.error("the following arguments are required: --checkpoint")
    try:
        if not Path(args.data_path).is_dir():
            raise EvaluationError(f"--data_path folder not found: {args.data_path}")
        device = resolve_device(args.device)
        model = load_model(args.checkpoint, device)
        n = max_budget(model)  # the LTC budget: N unless the model was trained with a smaller one
        budgets = args.budgets or list(range(model.conditioning.budget_step, n + 1, model.conditioning.budget_step))
        if min(budgets) < 1 or max(budgets) > n:
            raise EvaluationError(f"--budgets must be in [1, {n}] (the model's LTC budget), got {budgets}")
        if any(not 0.0 <= e <= 1.0 for e in args.epsilons):
            raise EvaluationError(f"--epsilons must lie in [0, 1], got {args.epsilons}")
        if not 0.0 <= args.probe_epsilon <= 1.0:
            raise EvaluationError(f"--probe_epsilon must lie in [0, 1], got {args.probe_epsilon}")
        data, _ = load_eval_data(args.data_path, model.config.input_size, "auto", args.batch_size, args.max_images)
        curve_budgets = sorted(set(budgets) | set(model.conditioning.eic_budget_choices))
        all_curves = error_curves(model, data, curve_budgets, device)
        # one snap for every budget, as LTC training does; the BCE uses the requested budgets' columns
        all_bins = model.conditioning.snap(torch.from_numpy(all_curves).flatten()).view(all_curves.shape).numpy()
        columns = [curve_budgets.index(b) for b in budgets]
        curves = all_curves[:, columns]
        result = ideal_halting_bce(all_bins[:, columns], budgets, n)
        result["token_counts"] = token_count_table(model, data, all_bins, curve_budgets, args.epsilons, device)
        result["encoder_probe"] = encoder_probe(model, data, all_curves, args.probe_epsilon, device)
    except (EvaluationError, ValueError, OSError) as err:
        print(f"halting_headroom: error: {err}", file=sys.stderr)
        return 2
    result["mean_l1_per_budget"] = [round(float(v), 5) for v in curves.mean(0)]
    print(f"images {result['images']}, budgets {budgets[0]}..{budgets[-1]}, condition bins crossed per image "
          f"{result['bins_per_image']:.2f}")
    print(f"ideal LTC halting BCE: position {result['position']:.3f} | + bin {result['position_and_bin']:.3f} | "
          f"+ image curve {result['image_curve']:.3f}")
    _print_table(result["token_counts"])
    probe = result["encoder_probe"]
    if probe["r2_loo"] is None:
        print(f"encoder probe: not computed ({probe['skipped']})")
    else:
        print(f"encoder probe: leave-one-out R^2 of the log error from the halting head's input at eps "
              f"{probe['epsilon']:g}: {probe['r2_loo']:.2f} ({probe['images']} images, ridge alpha {probe['alpha']:g})")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
