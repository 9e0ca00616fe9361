"""Per-image reconstruction metrics and the rank correlation, one implementation each.

The model CLI (`karl encode` / `karl analyze`), training (stage-0 validation) and the evaluation package
all measure with these; `evaluation.metrics` re-exports them beside SSIM and the streaming aggregator.
Images are in [0, 1] (data range 1, METHOD.md section 5), shape (B, C, H, W); every metric returns one
value per image, (B,).
"""
from __future__ import annotations

from typing import Sequence

import torch

DATA_RANGE = 1.0  # METHOD.md section 5: images are in [0, 1] everywhere


def check_image_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def l1_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image. x, y: (B, C, H, W) -> (B,). KARL's epsilon is measured in this unit."""
    check_image_pair(x, y)
    return (x.float() - y.float()).abs().flatten(1).mean(1)


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error (the "L2" of the paper's tables) per image. (B, C, H, W) -> (B,)."""
    check_image_pair(x, y)
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """PSNR in dB from per-image MSE. Identical images (MSE 0) give +inf, as skimage does."""
    return 10.0 * torch.log10(data_range**2 / mse.double()).float()


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman rank correlation with its p-value: {"rho", "p_value", "n"}; rho and p_value are None (and
    "note" says why) when it is undefined: fewer than 3 values, or a constant side."""
    import warnings

    import numpy as np
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return {"rho": None, "p_value": None, "n": int(x.size), "note": "fewer than 3 images"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p_value": None, "n": int(x.size), "note": "one of the inputs is constant"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(x, y)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": int(x.size)}
