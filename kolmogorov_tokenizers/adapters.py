"""What KARL's decoder predicts on its N 2D positions, and how that feeds the base decoder (METHOD.md s.2, 4).

VQGAN: logits over the base codebook; stage-1 loss = CE on the base code ids (label smoothing: a setting, 0 as
       the release) + MSE(soft code, true code); the base decoder receives the softmax-weighted code (or the
       argmax code, a setting).
VAE:   the 16-d latent regressed directly; stage-1 loss = MSE on latents.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange

from base_tokenizers.base import BaseEncoding, BaseTokenizer
from kolmogorov_tokenizers.config import KARLConfig


class OutputAdapter:
    out_dim: int

    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        self.config = config

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        """out (B, N, out_dim) -> base latent grid (B, C, g, g)."""
        raise NotImplementedError

    def latent_loss(self, out: torch.Tensor, target: BaseEncoding, base: BaseTokenizer
                    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise NotImplementedError


class VQGANAdapter(OutputAdapter):
    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        super().__init__(base, config)
        if not base.codebook_size:
            raise ValueError(f"base tokenizer {type(base).__name__} of kind 'vqgan' has no codebook_size")
        self.out_dim = base.codebook_size

    def soft_code(self, out: torch.Tensor, base: BaseTokenizer) -> torch.Tensor:
        # out: (B, N, K) logits -> (B, N, C) probability-weighted code vectors
        codes = base.codebook().float()  # (K, C)
        if not self.config.vqgan_soft_code_codebook_grad:
            codes = codes.detach()  # the release: the codebook's values, no gradient (stage 2 keeps it fixed)
        return out.float().softmax(dim=-1) @ codes

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        code = base.codebook()[out.argmax(dim=-1)] if hard else self.soft_code(out, base)  # (B, N, C)
        return rearrange(code, "b (h w) c -> b c h w", h=grid, w=grid)

    def latent_loss(self, out, target, base):
        if target.indices is None:
            raise ValueError("the VQGAN adapter needs the base encoding's code indices")
        ce = F.cross_entropy(out.float().flatten(0, 1), target.indices.flatten().long(),
                             label_smoothing=self.config.label_smoothing)
        true_code = rearrange(target.target, "b c h w -> b (h w) c").float()
        mse = F.mse_loss(self.soft_code(out, base), true_code)
        loss = ce + self.config.soft_code_mse_weight * mse
        return loss, {"ce": float(ce.detach()), "code_mse": float(mse.detach())}


class VAEAdapter(OutputAdapter):
    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        super().__init__(base, config)
        self.out_dim = base.embed_dim

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        return rearrange(out, "b (h w) c -> b c h w", h=grid, w=grid)

    def latent_loss(self, out, target, base):
        mse = F.mse_loss(out.float(), rearrange(target.target, "b c h w -> b (h w) c").float())
        return mse, {"latent_mse": float(mse.detach())}


ADAPTERS = {"vqgan": VQGANAdapter, "vae": VAEAdapter}


def build_adapter(base: BaseTokenizer, config: KARLConfig) -> OutputAdapter:
    if base.kind not in ADAPTERS:
        raise ValueError(f"base tokenizer kind {base.kind!r} is not supported; allowed: {', '.join(ADAPTERS)}")
    return ADAPTERS[base.kind](base, config)
