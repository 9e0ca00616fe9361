"""Search baseline: what test-time-search tokenizers (ALIT, One-D-Piece) do to pick a token count.

Per image: the smallest budget of an increasing list (steps of N/16 by default) whose fixed-budget
reconstruction (epsilon 0) has L1 <= eps, found by running fixed-budget passes in increasing order. Each
pass runs only on the images of the batch that are still unresolved. We count the passes and time them,
then compare with KARL's single pass at the full budget (the variable-allocation results).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .fixed import encode_fixed_budget
from .runner import EvalData, Timer
from .metrics import l1_per_image

SEARCH_STEPS = 16  # budget list = N/16 * k, k = 1..16
SEARCH_EPSILON_CONDITION = 0.0  # each pass is a fixed-budget reconstruction: epsilon 0, no adaptivity


def default_search_budgets(max_budget: int) -> list[int]:
    step = max(max_budget // SEARCH_STEPS, 1)
    return sorted({min(step * k, max_budget) for k in range(1, SEARCH_STEPS + 1)})


@dataclass
class SearchResult:
    epsilon: float
    ids: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # budget found (the largest budget when none meets eps)
    passes: list[int] = field(default_factory=list)  # fixed-budget passes this image took part in
    met: list[bool] = field(default_factory=list)  # whether some budget reached L1 <= eps
    l1: list[float] = field(default_factory=list)  # L1 at the chosen budget
    seconds: float = 0.0  # model time of all passes


@torch.no_grad()
def search_min_budget(
    model, data: EvalData, epsilon: float, budgets: Sequence[int], device: torch.device
) -> SearchResult:
    budgets = sorted(set(int(b) for b in budgets))
    result = SearchResult(epsilon)
    timer = Timer(device)
    for batch in data.batches():
        images = batch.images.to(device)
        n = len(batch.ids)
        tokens = torch.full((n,), budgets[-1], dtype=torch.long)
        passes = torch.zeros(n, dtype=torch.long)
        met = torch.zeros(n, dtype=torch.bool)
        l1_found = torch.full((n,), float("nan"))
        todo = torch.arange(n)  # indices into the batch still unresolved
        for budget in budgets:
            pending = images[todo.to(device)]  # (n_todo, 3, H, W)
            with timer:
                (recon,) = encode_fixed_budget(model, pending, budget)  # epsilon 0, halting off
            l1 = l1_per_image(recon.images.clamp(0, 1), pending).cpu()
            passes[todo] += 1
            ok = l1 <= epsilon
            tokens[todo[ok]] = budget
            met[todo[ok]] = True
            l1_found[todo] = l1  # the last tried budget's L1 for those never resolved
            todo = todo[~ok]
            if todo.numel() == 0:
                break
        result.ids.extend(batch.ids)
        result.tokens.extend(int(t) for t in tokens)
        result.passes.extend(int(p) for p in passes)
        result.met.extend(bool(m) for m in met)
        result.l1.extend(float(v) for v in l1_found)
    result.seconds = timer.seconds
    return result


def compare_with_karl(
    search: SearchResult, karl_tokens: np.ndarray, karl_seconds: float, budget_step: int
) -> dict:
    """Side-by-side numbers of the search baseline and KARL's single pass at one epsilon."""
    s_tokens = np.asarray(search.tokens, dtype=np.float64)
    k_tokens = np.asarray(karl_tokens, dtype=np.float64)
    if s_tokens.shape != k_tokens.shape:
        raise ValueError(f"search covered {s_tokens.size} images but KARL {k_tokens.size}")
    n = max(len(search.ids), 1)
    return {
        "search": {
            "mean_tokens": float(s_tokens.mean()),
            "mean_passes": float(np.mean(search.passes)),
            "max_passes": int(np.max(search.passes)),
            "share_met": float(np.mean(search.met)),
            "model_seconds": search.seconds,
            "seconds_per_image": search.seconds / n,
        },
        "karl": {
            "mean_tokens": float(k_tokens.mean()),
            "passes": 1,
            "model_seconds": karl_seconds,
            "seconds_per_image": karl_seconds / n,
        },
        "agreement_within_one_step": float(np.mean(np.abs(k_tokens - s_tokens) <= budget_step)),
        "mean_token_difference_karl_minus_search": float(np.mean(k_tokens - s_tokens)),
        "mean_abs_token_difference": float(np.mean(np.abs(k_tokens - s_tokens))),
        "speedup": search.seconds / karl_seconds if karl_seconds > 0 else None,
    }
