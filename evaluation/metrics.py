"""Pixel metrics of reconstructions (L1, L2, PSNR, SSIM) and a streaming aggregator.

L1, L2 (MSE) and PSNR are the model package's (kolmogorov_tokenizers.metrics), re-exported here so the
CLI, training and evaluation measure with one implementation; SSIM is evaluation's own.

All metrics take images in [0, 1] (data range 1, METHOD.md section 5), shape (B, 3, H, W), and return one
value per image (B,), so an evaluation can keep per-image rows and aggregate without storing images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kolmogorov_tokenizers.metrics import (DATA_RANGE, check_image_pair, l1_per_image, mse_per_image,  # noqa: F401
                                           psnr_from_mse)

SSIM_WINDOW = 11  # standard SSIM (Wang et al. 2004; skimage gaussian_weights=True): 11x11 gaussian window
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _valid_blur_matrix(length: int, window: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(length - window + 1, length) matrix whose rows are the 1D gaussian window at each valid offset:
    a 'valid' 1D convolution as one matmul (much faster than a grouped conv2d on the CPU)."""
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    out = length - window + 1
    m = torch.zeros(out, length, dtype=torch.float64)
    for i in range(out):
        m[i, i : i + window] = g
    return m.to(device=like.device, dtype=like.dtype)


def ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = DATA_RANGE,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """Structural similarity per image, averaged over channels and over the window positions that lie
    fully inside the image (what skimage.metrics.structural_similarity returns with gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=0). (B, C, H, W) -> (B,).
    The gaussian window is separable: two 1D passes (matmuls) over the five moment maps at once."""
    check_image_pair(x, y)
    b, c, h, w = x.shape
    if min(h, w) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {h}x{w}")
    x, y = x.float(), y.float()
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    rows = _valid_blur_matrix(h, window, sigma, x)  # (H', H)
    cols = _valid_blur_matrix(w, window, sigma, x)  # (W', W)
    blurred = rows @ moments @ cols.T  # (B, 5C, H', W')
    mu_x, mu_y, e_xx, e_yy, e_xy = blurred.double().split(c, dim=1)  # each (B, C, H-w+1, W-w+1)
    var_x, var_y, cov_xy = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).float()


def pixel_metrics(reconstruction: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """All per-image pixel metrics of one batch: name -> (B,) tensor on the CPU.
    The reconstruction is clamped to [0, 1] first: it is what a user would save as an image."""
    recon = reconstruction.detach().clamp(0.0, 1.0)
    images = images.detach()
    mse = mse_per_image(recon, images)
    return {
        "l1": l1_per_image(recon, images).cpu(),
        "l2": mse.cpu(),
        "psnr": psnr_from_mse(mse).cpu(),
        "ssim": ssim_per_image(recon, images).cpu(),
    }


@dataclass
class StreamingMean:
    """Running mean (and min/max/std) of per-image values, fed batch by batch; nothing else is kept.
    Non-finite values (the +inf PSNR of a perfect reconstruction) are counted apart and left out."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    non_finite: int = 0

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten().cpu()
        finite = torch.isfinite(values)
        self.non_finite += int((~finite).sum())
        values = values[finite]
        if values.numel() == 0:
            return
        self.count += values.numel()
        self.total += float(values.sum())
        self.total_sq += float((values**2).sum())
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        if not self.count:
            return math.nan
        return math.sqrt(max(self.total_sq / self.count - self.mean**2, 0.0))

    def summary(self) -> dict[str, float]:
        out = {"mean": self.mean, "std": self.std, "min": self.minimum, "max": self.maximum, "count": self.count}
        if self.non_finite:
            out["non_finite"] = self.non_finite
        return out


@dataclass
class MetricAggregator:
    """Aggregates named per-image metrics of one evaluation setting (one budget or one epsilon).
    Aggregate of each metric = mean over images of its per-image value (so PSNR is the mean of per-image
    PSNRs, not the PSNR of the mean MSE; both are reported for PSNR)."""

    stats: dict[str, StreamingMean] = field(default_factory=dict)

    def update(self, metrics: dict[str, torch.Tensor]) -> None:
        for name, values in metrics.items():
            self.stats.setdefault(name, StreamingMean()).update(values)

    def means(self) -> dict[str, float]:
        out = {name: s.mean for name, s in self.stats.items()}
        if "l2" in self.stats:
            out["psnr_of_mean_l2"] = float(psnr_from_mse(torch.tensor(self.stats["l2"].mean)))
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: s.summary() for name, s in self.stats.items()}
