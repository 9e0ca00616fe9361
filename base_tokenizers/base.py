"""The interface every base (2D) tokenizer implements, so that KARL can sit on any of them.

KARL reads a 2D latent grid from a frozen base tokenizer and, at the end, hands a predicted grid back to
its decoder. Everything KARL needs from a base is on this class; nothing else may be assumed.
Images are float tensors in [0, 1], shape (B, 3, H, W), whatever range the wrapped network works in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass
class BaseEncoding:
    """What a base tokenizer gives KARL for a batch of images.

    latent:  (B, C, h, w) the grid KARL's encoder reads (VQGAN: pre-quantisation z; VAE: scaled sample).
    target:  (B, C, h, w) what KARL's decoder must reproduce (VQGAN: quantised z_q; VAE: same as latent).
    indices: (B, h, w) long code ids (VQGAN) or None (VAE).
    """

    latent: torch.Tensor
    target: torch.Tensor
    indices: Optional[torch.Tensor] = None


@dataclass
class AutoencoderOutput:
    """One reconstruction pass through the base tokenizer, used to train it (stage 0).

    reconstruction: (B, 3, H, W) in [0, 1], not clamped.
    reg_loss:       scalar regulariser of the latent (VQGAN: codebook + commitment; VAE: KL per image).
    indices:        (B, h, w) code ids (VQGAN) or None.
    latent:         (B, C, h, w) encoder output before quantisation / sampling (dead-code restarts use it).
    """

    reconstruction: torch.Tensor
    reg_loss: torch.Tensor
    indices: Optional[torch.Tensor] = None
    latent: Optional[torch.Tensor] = None


class BaseTokenizer(nn.Module):
    """Abstract base tokenizer. Subclasses set the class/instance attributes below and implement
    `encode`, `decode` and `last_layer` (and `codebook` for quantised bases)."""

    kind: str = ""  # "vqgan" | "vae": selects KARL's output adapter
    embed_dim: int = 0  # channels C of the latent grid
    downsample_factor: int = 1  # f: grid side = input side // f
    codebook_size: Optional[int] = None  # number of codes (quantised bases only)
    registry_name: Optional[str] = None  # set by create_base_tokenizer; KARL checkpoints record it
    # stage 0 sets a VAE base's latent scale from its trained latents unless told otherwise (--calibrate_scale)
    calibrate_scale_after_training: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.frozen = True

    # --- the contract -------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> BaseEncoding:
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) grid in KARL's latent space -> (B, 3, H, W) images in [0, 1] (not clamped)."""
        raise NotImplementedError

    def codebook(self) -> torch.Tensor:
        """(K, C) code vectors, for quantised bases."""
        raise NotImplementedError(f"{type(self).__name__} has no codebook")

    def last_layer(self) -> torch.Tensor:
        """Weight of the pixel decoder's last layer (taming's adaptive GAN weight uses its gradients)."""
        raise NotImplementedError

    def autoencode(self, images: torch.Tensor) -> AutoencoderOutput:
        """Encode and decode with gradients (stage-0 training). Optional for bases that are only used frozen."""
        raise NotImplementedError(f"{type(self).__name__} cannot be trained from scratch (no autoencode)")

    def forward(self, images: torch.Tensor) -> AutoencoderOutput:
        # forward = autoencode, so a DistributedDataParallel wrapper syncs stage-0 gradients
        return self.autoencode(images)

    def grid_size(self, input_size: int) -> int:
        if input_size % self.downsample_factor != 0:
            raise ValueError(
                f"input size {input_size} is not a multiple of the base tokenizer's downsampling factor "
                f"{self.downsample_factor}"
            )
        return input_size // self.downsample_factor

    # --- frozen by default ----------------------------------------------------------------------------
    def set_trainable(self, trainable: bool = True) -> "BaseTokenizer":
        """Frozen (default): no gradients and always in eval mode. Trainable: stage 2 / stage 0."""
        self.frozen = not trainable
        for p in self.parameters():
            p.requires_grad_(trainable)
        super().train(self.training if trainable else False)
        return self

    def train(self, mode: bool = True) -> "BaseTokenizer":
        # A frozen base tokenizer stays in eval mode even when the KARL model around it trains.
        return super().train(mode and not self.frozen)
