"""Variable allocation: full budget, a list of target errors epsilon; the model halts what it does not need.

Official settings (METHOD.md section 5): budget 256 (the model's N), epsilon in {0.03, 0.05, 0.09}; we add
0.07 (the release's advice for fewer tokens, METHOD.md section 5) by default. Each epsilon is timed on its own:
this is KARL's single pass that the search baseline is compared with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .runner import EvalData, GridSamples, SettingResult, Timer, encode, measure

DEFAULT_EPSILONS = (0.03, 0.05, 0.07, 0.09)  # METHOD.md section 5 (+0.07, the release's advice for fewer tokens)


def setting_name(epsilon: float) -> str:
    return f"eps_{epsilon:g}"


@dataclass
class VariableResults:
    budget: int
    epsilons: list[float]
    settings: dict[float, SettingResult] = field(default_factory=dict)

    def summary(self, perceptual=None) -> dict:
        rows = {}
        for eps in self.epsilons:
            s = self.settings[eps]
            extra = perceptual.distribution_metrics(setting_name(eps)) if perceptual is not None else {}
            rows[f"{eps:g}"] = {
                **s.summary(),
                **extra,
                "model_seconds": s.seconds,
                "images_per_second": len(s.ids) / s.seconds if s.seconds > 0 else None,
            }
        return {"budget": self.budget, "epsilons": self.epsilons, "per_epsilon": rows}


def evaluate_variable(
    model,
    data: EvalData,
    epsilons: Sequence[float],
    budget: int,
    device: torch.device,
    perceptual=None,
    grid: Optional[GridSamples] = None,
) -> VariableResults:
    epsilons = [float(e) for e in epsilons]
    results = VariableResults(budget, epsilons, {e: SettingResult(setting_name(e)) for e in epsilons})
    timers = {e: Timer(device) for e in epsilons}
    for batch in data.batches():
        images = batch.images.to(device)
        for eps in epsilons:
            with timers[eps]:
                (recon,) = encode(model, images, budget, eps)
            measure(results.settings[eps], recon, batch, perceptual)
            if grid is not None:
                grid.offer(setting_name(eps), batch, recon)
    for eps in epsilons:
        results.settings[eps].seconds = timers[eps].seconds
    return results
