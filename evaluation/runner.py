"""What every evaluation section shares: the batches it reads, one call of the model, per-setting results.

A section streams over `EvalData.batches()` once per setting group, asks the model for reconstructions,
and keeps per image only a handful of numbers (tokens and metrics), never the images themselves (except the
few shown in the reconstruction grids).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .metrics import MetricAggregator, pixel_metrics


@dataclass
class EvalBatch:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    ids: list[str]  # one name per image (file path relative to the data root, or an index)


@dataclass
class EvalData:
    """A re-iterable source of batches plus what is known about each image.

    batches: a callable returning a fresh iterator over EvalBatch (called once per pass).
    metadata: image id -> {"family": str, "complexity_level": float, ...} when the data has it."""

    name: str
    batches: Callable[[], Iterator[EvalBatch]]
    num_images: int
    metadata: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_tensor(cls, images: torch.Tensor, batch_size: int, name: str = "tensor", metadata=None) -> "EvalData":
        """Wrap an in-memory (N, 3, H, W) tensor (tests, notebooks)."""
        ids = [f"{i:06d}" for i in range(len(images))]

        def batches() -> Iterator[EvalBatch]:
            for s in range(0, len(images), batch_size):
                yield EvalBatch(images[s : s + batch_size], ids[s : s + batch_size])

        return cls(name, batches, len(images), metadata or {})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_budget(model) -> int:
    """The model's LTC budget (N, the number of 2D tokens, unless configured): the largest budget it is trained
    to use."""
    for owner in (model, getattr(model, "config", None)):
        for name in ("max_budget", "max_tokens", "ltc_budget", "num_2d_tokens", "num_latent_tokens"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and value > 0:
                return value
    raise AttributeError(
        f"{type(model).__name__} exposes no token budget (looked for max_budget / max_tokens / "
        "ltc_budget / num_2d_tokens on the model and its config)"
    )


@dataclass
class Reconstruction:
    images: torch.Tensor  # (B, 3, H, W), as returned by the model (not clamped)
    num_tokens: torch.Tensor  # (B,) long, on the CPU


@torch.no_grad()
def encode(model, images: torch.Tensor, budget: int | Sequence[int], epsilon: float) -> list[Reconstruction]:
    """One model call; a list of budgets gives one Reconstruction per budget (in that order)."""
    result = model.encode(images, input_token_budget=budget, desired_reconstruction_quality=epsilon)
    results = result if isinstance(budget, (list, tuple)) else [result]
    out = []
    for r in results:
        _, recon, info = r
        out.append(Reconstruction(recon, torch.as_tensor(info["num_tokens"]).detach().long().cpu().flatten()))
    return out


class Timer:
    """Wall time of the model calls only (data loading excluded), synchronised on GPUs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start


@dataclass
class SettingResult:
    """Per-image numbers and aggregates of one setting (one fixed budget, or one epsilon)."""

    name: str
    ids: list[str] = field(default_factory=list)
    per_image: dict[str, list[float]] = field(default_factory=dict)  # metric -> values in image order
    aggregate: MetricAggregator = field(default_factory=MetricAggregator)
    seconds: float = 0.0  # model time of this setting alone (0 when timed together with others)

    def add(self, ids: list[str], metrics: dict[str, torch.Tensor]) -> None:
        self.ids.extend(ids)
        for name, values in metrics.items():
            self.per_image.setdefault(name, []).extend(float(v) for v in values)
        self.aggregate.update(metrics)

    def column(self, metric: str) -> np.ndarray:
        return np.asarray(self.per_image[metric], dtype=np.float64)

    def summary(self) -> dict:
        return {"num_images": len(self.ids), **self.aggregate.means()}


def measure(
    setting: SettingResult, recon: Reconstruction, batch: EvalBatch, perceptual=None
) -> dict[str, torch.Tensor]:
    """All per-image metrics of one batch of one setting, added to the setting's results."""
    images = batch.images.to(recon.images.device)
    metrics = {"tokens": recon.num_tokens.float(), **pixel_metrics(recon.images, images)}
    if perceptual is not None:
        metrics.update(perceptual.update(setting.name, recon.images, images))
    setting.add(batch.ids, metrics)
    return metrics


def grid_sample_ids(metadata: dict[str, dict], limit: int) -> Optional[list[str]]:
    """Up to `limit` image ids that show every family: one per family in turn (families and ids in sorted order),
    e.g. 9 demo families and limit 8 -> the first image of 8 families, limit 18 -> two of each. None without
    family metadata (the grid then shows the first images read)."""
    by_family: dict[str, list[str]] = {}
    for image_id in sorted(metadata):
        family = metadata[image_id].get("family")
        if family is None:
            return None
        by_family.setdefault(str(family), []).append(image_id)
    if not by_family or limit <= 0:
        return None
    queues = [by_family[f] for f in sorted(by_family)]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][: limit - len(chosen)]
        depth += 1
    return chosen


class GridSamples:
    """A few originals and their reconstructions per setting, for the report's grids.

    `wanted`: the ids to show, in order (see grid_sample_ids); None = the first `limit` images read. Images are
    collected from every batch, so the grid is not limited to the first batch's (path-sorted) families."""

    def __init__(self, limit: int = 8, wanted: Optional[Sequence[str]] = None) -> None:
        self.limit = limit
        self.wanted = list(wanted)[:limit] if wanted is not None else None
        self._wanted_set = set(self.wanted) if self.wanted is not None else None
        self._originals: dict[str, torch.Tensor] = {}  # id -> (3, H, W)
        self._recons: dict[str, dict[str, tuple[torch.Tensor, int]]] = {}  # setting -> id -> (image, tokens)

    def offer(self, setting: str, batch: EvalBatch, recon: Reconstruction) -> None:
        if self.limit <= 0:
            return
        per_id = self._recons.setdefault(setting, {})
        for i, image_id in enumerate(batch.ids):
            if self._wanted_set is not None and image_id not in self._wanted_set:
                continue
            if self._wanted_set is None and image_id not in self._originals and len(self._originals) >= self.limit:
                continue
            self._originals.setdefault(image_id, batch.images[i].detach().cpu())
            if image_id not in per_id:
                per_id[image_id] = (recon.images[i].detach().clamp(0, 1).cpu(), int(recon.num_tokens[i]))

    def _order(self) -> list[str]:
        if self.wanted is not None:
            return [i for i in self.wanted if i in self._originals]
        return list(self._originals)

    @property
    def ids(self) -> list[str]:
        return self._order()

    @property
    def originals(self) -> Optional[torch.Tensor]:
        """(K, 3, H, W) or None before any image was offered."""
        order = self._order()
        return torch.stack([self._originals[i] for i in order]) if order else None

    @property
    def rows(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """setting -> ((K, 3, H, W) reconstructions, (K,) token counts), for settings that saw every shown image."""
        order = self._order()
        out = {}
        for setting, per_id in self._recons.items():
            if order and all(i in per_id for i in order):
                out[setting] = (torch.stack([per_id[i][0] for i in order]),
                                torch.tensor([per_id[i][1] for i in order]))
        return out
