"""Fixed allocation: every image at each budget of a list, epsilon 0 (METHOD.md section 5).

The official list is [32, 64, ..., 256] for a 256-token model; on another grid it is scaled: N/8 * k,
k = 1..8. All budgets of a batch come from ONE model call (the model accepts a list of budgets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .runner import EvalData, GridSamples, SettingResult, Timer, encode, measure

FIXED_EPSILON = 0.0  # METHOD.md section 5: fixed-token evaluation uses epsilon 0 (no adaptivity)
OFFICIAL_BUDGET_STEPS = 8  # [32, 64, ..., 256] = N/8 * k, k = 1..8 (METHOD.md section 5)


def default_fixed_budgets(max_budget: int) -> list[int]:
    step = max(max_budget // OFFICIAL_BUDGET_STEPS, 1)
    return sorted({min(step * k, max_budget) for k in range(1, OFFICIAL_BUDGET_STEPS + 1)})


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
            recons = encode(model, images, list(budgets), FIXED_EPSILON)
        for budget, recon in zip(budgets, recons):
            measure(results.settings[budget], recon, batch, perceptual)
            if grid is not None:
                grid.offer(setting_name(budget), batch, recon)
    results.seconds = timer.seconds
    return results
