"""A KL VAE on 8x8 pixel patches: the CPU demo's base tokenizer (`patch_vae_demo`).

Why it exists: the LDM/MAR convolutional family (blocks.py) at demo size learns too slowly for a CPU
budget: after 300 Adam steps (lr 1e-3, batch 16) it still reconstructs a flat colour image with mean L1
~0.24 (it outputs grey). This network sees each patch as one vector (pixel-unshuffle), mixes neighbouring
patches with 3x3 residual convolutions on the latent grid, and reaches a mean L1 of 0.054 on the demo
val images after 600 steps (73 s on one thread). Same KL posterior, scaling and KARL interface as
`VAETokenizer`; only the network inside `.vae` differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from base_tokenizers.vae import DiagonalGaussian, VAETokenizer


@dataclass
class PatchVAEConfig:
    resolution: int = 64
    patch_size: int = 8  # downsampling factor f: one latent vector per patch
    width: int = 256  # channels of the residual convolutions on the latent grid
    encoder_blocks: int = 1
    decoder_blocks: int = 2
    embed_dim: int = 16  # latent channels C KARL reads
    # latent = sample * scale. Stage 0 sets it to 1 / (std of the posterior means on training images), the
    # LDM practice, so KARL regresses unit-scale targets whatever the trained network's latent range.
    scale: float = 1.0
    decode_scaled_latent: bool = False  # see VAEConfig
    sample_posterior: Optional[bool] = None  # see VAEConfig
    pixel_range: str = "signed"  # see VAEConfig


class PatchResidualBlock(nn.Module):
    """x + conv3x3(GELU(conv3x3(GELU(x)))): no normalisation, so absolute colour passes straight through."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class PatchAutoencoderKL(nn.Module):
    """images [-1, 1] -> (unshuffle f) -> 1x1 conv -> residual blocks -> 2C moments; the mirror to decode."""

    def __init__(self, cfg: PatchVAEConfig) -> None:
        super().__init__()
        f, w, C = cfg.patch_size, cfg.width, cfg.embed_dim
        self.patch_size = f
        self.encoder_in = nn.Conv2d(3 * f * f, w, 1)
        self.encoder_blocks = nn.ModuleList(PatchResidualBlock(w) for _ in range(cfg.encoder_blocks))
        self.encoder_out = nn.Conv2d(w, 2 * C, 1)
        self.decoder_in = nn.Conv2d(C, w, 1)
        self.decoder_blocks = nn.ModuleList(PatchResidualBlock(w) for _ in range(cfg.decoder_blocks))
        self.conv_out = nn.Conv2d(w, 3 * f * f, 1)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:  # x: (B, 3, H, W) in [-1, 1]
        h = self.encoder_in(F.pixel_unshuffle(x, self.patch_size))
        for block in self.encoder_blocks:
            h = block(h)
        return DiagonalGaussian(self.encoder_out(F.gelu(h)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # z: (B, C, h, w) unscaled -> [-1, 1] images
        h = self.decoder_in(z)
        for block in self.decoder_blocks:
            h = block(h)
        return F.pixel_shuffle(self.conv_out(F.gelu(h)), self.patch_size)


class PatchVAETokenizer(VAETokenizer):
    """`VAETokenizer` with the patch network; weights live at `.vae` as for every VAE base."""

    config_class = PatchVAEConfig
    calibrate_scale_after_training = True  # its scale has no released value to keep (see PatchVAEConfig.scale)

    def _build_network(self, config: PatchVAEConfig) -> nn.Module:
        if config.resolution % config.patch_size:
            raise ValueError(f"resolution {config.resolution} is not a multiple of patch_size {config.patch_size}")
        return PatchAutoencoderKL(config)

    def _downsample_factor(self, config: PatchVAEConfig) -> int:
        return config.patch_size

    def last_layer(self) -> torch.Tensor:
        return self.vae.conv_out.weight
