"""How much the halting head could learn: the LTC halting loss of three ideal predictors.

In LTC training (METHOD.md s.3) an image encoded with budget T reaches error eps0(T); the halting head is
then asked, under the condition snap(eps0(T)), to keep tokens 0..T-1 and halt T..N-1. Given every image's
error curve eps0(T) over the EIC budgets (sampled uniformly, as training does), the best achievable mean
BCE of a predictor that sees
  - the token position only:               P(halt_i) = P(i >= T)                      ("position")
  - the position and the condition bin:    P(halt_i) = P(i >= T | bin)                ("position_and_bin")
  - the position, the bin and the image:   P(halt_i) = P(i >= T | bin, image)         ("image_curve")
A trained head sitting at "position" has learned nothing conditional (every image gets the same count).
The gap to "image_curve" is what the condition and the image can teach; if "position_and_bin" is close to
"position", that signal is image-specific: the head must predict each image's own error curve.
Budgets above N have no halting targets and are left out.

`ideal_token_counts` goes one step further: the token count that a head which fits the LTC targets exactly
would keep for each image at each condition bin, condition augmentation included. Set beside the trained
model's counts, it tells a head that has not learned yet (learned far from ideal) from an objective that
itself asks for the count (learned close to ideal): a method check that fails on the ideal counts cannot
be fixed by training the head longer.

`ridge_loo_r2` on `halting_inputs` asks the question behind a head that lags: does the encoder already
know how hard each image is? It regresses each image's log error (its error curve's level) on what the
halting head reads (its input, averaged over the 1D tokens). A high leave-one-out R^2 with learned counts far
from ideal: the head lags. A low one: the encoder does not carry the information yet.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import numpy as np
import torch

from evaluation.fixed import encode_fixed_budget
from evaluation.metrics import l1_per_image
from evaluation.runner import EvalData, encode, max_budget

PROB_CLAMP = 1e-6  # keeps log() finite where an ideal predictor is certain
RIDGE_ALPHAS = tuple(10.0 ** (k / 2) for k in range(-4, 9))  # 0.01 .. 1e4 on standardised features


def _bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, PROB_CLAMP, 1 - PROB_CLAMP)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def ideal_halting_bce(bin_idx: np.ndarray, budgets: Sequence[int], num_tokens: int) -> dict:
    """bin_idx: (images, len(budgets)) condition bin of each image's eps0 at each budget, as the model's
    conditioning snaps it (`model.conditioning.snap`); num_tokens: N (the LTC budget).

    Returns the mean BCE over (image, budget, token) of the three ideal predictors, and how many distinct
    condition bins an image's curve crosses on average."""
    bin_idx = np.asarray(bin_idx)
    budgets = np.asarray(budgets)
    if bin_idx.ndim != 2 or bin_idx.shape[1] != len(budgets):
        raise ValueError(f"bin_idx must have shape (images, {len(budgets)}), got {bin_idx.shape}")
    keep = budgets <= num_tokens
    if not keep.any():
        raise ValueError(f"no budget <= N = {num_tokens}: nothing has halting targets")
    bin_idx, budgets = bin_idx[:, keep], budgets[keep]
    positions = np.arange(num_tokens)
    halt = (positions[None, :] >= budgets[:, None]).astype(np.float64)  # (K, N): targets per budget

    position = halt.mean(0)  # (N,)
    by_bin = {b: halt[np.nonzero(bin_idx == b)[1]].mean(0) for b in np.unique(bin_idx)}
    totals = {"position": 0.0, "position_and_bin": 0.0, "image_curve": 0.0}
    for i in range(bin_idx.shape[0]):
        for k in range(len(budgets)):
            y = halt[k]
            same = bin_idx[i] == bin_idx[i, k]
            totals["position"] += _bce(position, y).mean()
            totals["position_and_bin"] += _bce(by_bin[bin_idx[i, k]], y).mean()
            totals["image_curve"] += _bce(halt[same].mean(0), y).mean()
    pairs = bin_idx.shape[0] * len(budgets)
    result = {k: v / pairs for k, v in totals.items()}
    result["bins_per_image"] = float(np.mean([len(np.unique(row)) for row in bin_idx]))
    result["images"], result["budgets"] = int(bin_idx.shape[0]), [int(b) for b in budgets]
    return result


def ideal_token_counts(bin_idx: np.ndarray, budgets: Sequence[int], num_tokens: int, query_bins: Sequence[int],
                       num_bins: int, threshold: float = 0.75, augmentation_prob: float = 0.0,
                       small_budget: int | None = None) -> np.ndarray:
    """Token counts an exactly fitted halting head would keep: (images, len(query_bins)), NaN where training
    never pairs that image with that bin.

    bin_idx (images, K): the condition bin of each image's eps0 at each EIC budget in `budgets` (the
    model's `eic_budget_choices`, drawn uniformly, repeats allowed). For each draw T the LTC targets halt
    tokens >= min(T, N), under the bin snap(eps0(T)) or, with probability `augmentation_prob`, an augmented
    one (`EpsilonConditioner.augment`): when T >= N (dT = 0) a bin drawn uniformly from
    [min(bin, 1), bin], when T == small_budget one drawn uniformly from [bin, num_bins - 1]. The fitted
    P(halt token j | image, bin) is the share of that bin's draws with min(T, N) <= j; the head keeps token j
    while it is <= threshold (KARL halts above it)."""
    bin_idx = np.asarray(bin_idx)
    budgets = np.asarray(budgets)
    if bin_idx.ndim != 2 or bin_idx.shape[1] != len(budgets):
        raise ValueError(f"bin_idx must have shape (images, {len(budgets)}), got {bin_idx.shape}")
    if not 0.0 <= augmentation_prob <= 1.0:
        raise ValueError(f"augmentation_prob must be in [0, 1], got {augmentation_prob}")
    query_bins = [int(b) for b in query_bins]
    kept_budget = np.minimum(budgets, num_tokens)  # the first min(T, N) tokens are kept
    positions = np.arange(num_tokens)
    counts = np.full((bin_idx.shape[0], len(query_bins)), np.nan)
    for i in range(bin_idx.shape[0]):
        mass = np.zeros((num_bins, len(budgets)))  # P(bin, draw k) for this image
        for k, b in enumerate(bin_idx[i]):
            b, p = int(b), 1.0 / len(budgets)
            if augmentation_prob > 0 and budgets[k] >= num_tokens:
                low = min(b, 1)
                mass[low:b + 1, k] += augmentation_prob * p / (b - low + 1)
            elif augmentation_prob > 0 and small_budget is not None and budgets[k] == small_budget:
                mass[b:, k] += augmentation_prob * p / (num_bins - b)
            else:
                mass[b, k] += p
                continue
            mass[b, k] += (1 - augmentation_prob) * p
        for q, b in enumerate(query_bins):
            total = mass[b].sum()
            if total <= 0:
                continue
            p_halt = (mass[b][None, :] * (kept_budget[None, :] <= positions[:, None])).sum(1) / total  # (N,)
            counts[i, q] = float((p_halt <= threshold).sum())
    return counts


@torch.no_grad()
def error_curves(model, data: EvalData, budgets: Sequence[int], device: torch.device,
                 log: Callable[[str], None] = print) -> np.ndarray:
    """(images, len(budgets)) mean L1 of fixed-budget reconstructions (epsilon 0, halting off, clamped):
    eps0 as the EIC phase measures it."""
    rows = []
    for batch in data.batches():
        images = batch.images.to(device)
        recons = encode_fixed_budget(model, images, list(budgets))
        rows.append(torch.stack([l1_per_image(r.images.clamp(0, 1), images).cpu() for r in recons], 1))
        log(f"  error curves: {sum(len(r) for r in rows)} images")
    return torch.cat(rows).numpy()


def ridge_loo_r2(features: np.ndarray, target: np.ndarray,
                 alphas: Sequence[float] = RIDGE_ALPHAS) -> Tuple[float, float]:
    """Leave-one-out R^2 of a ridge regression from features (n, d) to target (n,) -> (r2, alpha).

    Features are standardised; the intercept is not penalised. For a fixed design and penalty the
    leave-one-out residual is exactly e_i / (1 - H_ii) (H the hat matrix), so no refits are needed. The
    alpha with the smallest leave-one-out error is picked from `alphas` (a slight optimism for small n).
    R^2 = 1 - PRESS / total sum of squares: 1 is perfect, 0 is no better than the mean, below 0 worse."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (n, d) and target (n,), got {x.shape} and {y.shape}")
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 images for a leave-one-out fit, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features and target must be finite")
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0.0:
        raise ValueError("the target is the same for every image: nothing to explain")
    std = x.std(0)
    x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    design = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)  # (n, 1 + d)
    penalty = np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is free
    gram = design.T @ design
    best = (np.inf, float(alphas[0]))
    for alpha in alphas:
        inverse = np.linalg.solve(gram + alpha * penalty, design.T)  # (1 + d, n)
        hat_diag = np.einsum("ij,ji->i", design, inverse)
        residual = y - design @ (inverse @ y)
        press = float(((residual / np.clip(1.0 - hat_diag, 1e-12, None)) ** 2).sum())
        if press < best[0]:
            best = (press, float(alpha))
    return 1.0 - best[0] / total, best[1]


@torch.no_grad()
def halting_inputs(model, data: EvalData, epsilon: float, device: torch.device) -> np.ndarray:
    """(images, head input width): the halting head's input (LayerNormed encoder outputs of the 1D tokens, and
    with `halting_image_context` the grid statistics beside them) in one LTC-budget pass at `epsilon`, averaged
    over the tokens. Read with a forward hook, so the model is unchanged."""
    captured: list[torch.Tensor] = []
    hook = model.halting_mlp.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].mean(1)))
    try:
        for batch in data.batches():
            encode(model, batch.images.to(device), max_budget(model), epsilon)
    finally:
        hook.remove()
    return torch.cat(captured).float().cpu().numpy()
