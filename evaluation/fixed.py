"""Fixed allocation: every image at each budget of a list, epsilon 0 (METHOD.md section 5).

The official list is [32, 64, ..., 256] for a 256-token model; on another grid it is scaled: N/8 * k,
k = 1..8. All budgets of a batch come from ONE model call (the model accepts a list of budgets).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .runner import EvalData, GridSamples, Reconstruction, SettingResult, Timer, encode, measure

FIXED_EPSILON = 0.0  # METHOD.md section 5: fixed-token evaluation uses epsilon 0 (no adaptivity)
OFFICIAL_BUDGET_STEPS = 8  # [32, 64, ..., 256] = N/8 * k, k = 1..8 (METHOD.md section 5)


def default_fixed_budgets(max_budget: int) -> list[int]:
    step = max(max_budget // OFFICIAL_BUDGET_STEPS, 1)
    return sorted({min(step * k, max_budget) for k in range(1, OFFICIAL_BUDGET_STEPS + 1)})


def encode_fixed_budget(model, images: torch.Tensor, budget: int | Sequence[int]) -> list[Reconstruction]:
    """Fixed-budget passes: epsilon 0 and, for models that support it (KARL's `adaptive` argument), halting
    off so all T tokens are active. Models without the argument are taken to be fixed-budget already."""
    if "adaptive" not in inspect.signature(model.encode).parameters:
        return encode(model, images, budget, FIXED_EPSILON)
    result = model.encode(images, input_token_budget=budget, desired_reconstruction_quality=FIXED_EPSILON,
                          adaptive=False)
    results = result if isinstance(budget, (list, tuple)) else [result]
    out = []
    for r in results:
        _, recon, info = r  # EncodeResult unpacks as (embedding, reconstruction, info)
        out.append(Reconstruction(recon, torch.as_tensor(info["num_tokens"]).detach().long().cpu().flatten()))
    return out


def setting_name(budget: int) -> str:
    return f"budget_{budget}"


@dataclass
class FixedResults:
    budgets: list[int]
    settings: dict[int, SettingResult] = field(default_factory=dict)
    seconds: float = 0.0  # model time of all budgets together (one call per batch)

    def summary(self, perceptual=None) -> dict:
        rows = {}
        for b in self.budgets:
            extra = perceptual.distribution_metrics(setting_name(b)) if perceptual is not None else {}
            rows[str(b)] = {**self.settings[b].summary(), **extra}
        n = len(self.settings[self.budgets[0]].ids) if self.budgets else 0
        return {
            "epsilon": FIXED_EPSILON,
            "budgets": self.budgets,
            "per_budget": rows,
            "model_seconds": self.seconds,
            "images_per_second": n / self.seconds if self.seconds > 0 else None,
        }


def evaluate_fixed(
    model,
    data: EvalData,
    budgets: Sequence[int],
    device: torch.device,
    perceptual=None,
    grid: Optional[GridSamples] = None,
) -> FixedResults:
    budgets = sorted(set(int(b) for b in budgets))
    results = FixedResults(budgets, {b: SettingResult(setting_name(b)) for b in budgets})
    timer = Timer(device)
    for batch in data.batches():
        images = batch.images.to(device)
        with timer:
            recons = encode_fixed_budget(model, images, list(budgets))
        for budget, recon in zip(budgets, recons):
            measure(results.settings[budget], recon, batch, perceptual)
            if grid is not None:
                grid.offer(setting_name(budget), batch, recon)
    results.seconds = timer.seconds
    return results
