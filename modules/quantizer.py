"""Vector quantiser for KARL's optional discrete 1D tokens (METHOD.md section 2).

Codebook 4096 x 12, inputs and codes l2-normalised (nearest code = largest cosine), straight-through
gradients, loss = commitment * ||sg(q) - z||^2 + ||q - sg(z)||^2 with commitment 0.25.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int = 4096, dim: int = 12, commitment: float = 0.25,
                 l2_normalize: bool = True) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.commitment = commitment  # METHOD.md s.2: 0.25
        self.l2_normalize = l2_normalize
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codes(self) -> torch.Tensor:
        w = self.embedding.weight  # (K, D)
        return F.normalize(w, dim=-1) if self.l2_normalize else w

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # z: (B, T, D) -> z_q (B, T, D) straight-through, scalar loss, indices (B, T)
        z = z.float()  # distances and the loss in fp32 even under autocast
        if self.l2_normalize:
            z = F.normalize(z, dim=-1)
        codes = self.codes().float()  # (K, D)
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; the first term does not change the argmin
        dist = codes.pow(2).sum(-1) - 2 * z @ codes.t()  # (B, T, K)
        indices = dist.argmin(dim=-1)  # (B, T)
        z_q = F.embedding(indices, codes)  # (B, T, D)
        loss = self.commitment * F.mse_loss(z, z_q.detach()) + F.mse_loss(z_q, z.detach())
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q, loss, indices

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, T) -> code vectors (B, T, D), as the forward pass returns them."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"code indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"code indices must be in [0, {self.codebook_size - 1}]")
        return F.embedding(indices.long(), self.codes())
