"""Pre-LN transformer block with the parameter names of the released KARL checkpoints.

The release builds its blocks on torch.nn.MultiheadAttention; we keep that module's parameter names
(`attn.in_proj_weight`, `attn.in_proj_bias`, `attn.out_proj.*`) so released state dicts load as they are,
but run attention through one of three interchangeable backends:
  "sdpa"      F.scaled_dot_product_attention (fast path, default; a mask is passed only when needed)
  "reference" F.multi_head_attention_forward, i.e. exactly what nn.MultiheadAttention runs (the release)
  "math"      F.scaled_dot_product_attention restricted to its math kernel (softmax(QK^T)V, same values).
              On CPU in bf16 with a small head dim its backward is ~2x faster than the flash kernel SDPA
              picks (demo stage-1 step of 32: 0.204 -> 0.147 s); at karl_small shapes flash is faster.
              benchmarks/bench_training.py times it (path fast+math); the quickstart configs select it.
Masks are boolean with True = "may attend" (the SDPA convention), shape (L, L), (B, L, L) or, one per head,
(B, heads, L, L).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_BACKENDS = ("sdpa", "reference", "math")
_default_backend = "sdpa"


def set_attention_backend(name: str) -> None:
    """Select the attention implementation used by every `Attention` whose own `backend` is None."""
    global _default_backend
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; allowed: {', '.join(ATTENTION_BACKENDS)}")
    _default_backend = name


def get_attention_backend() -> str:
    return _default_backend


class Attention(nn.Module):
    """Multi-head self-attention holding nn.MultiheadAttention's parameters (same names and layout)."""

    def __init__(self, width: int, heads: int, backend: Optional[str] = None) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} must be divisible by the number of heads {heads}")
        if backend is not None and backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; allowed: {', '.join(ATTENTION_BACKENDS)}")
        self.width, self.heads = width, heads
        self.backend = backend  # None = follow set_attention_backend()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        # nn.MultiheadAttention's initialisation, so a fresh model matches the release's.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        # x: (B, L, D); attn_mask: bool (L, L), (B, L, L) or (B, heads, L, L), True = may attend
        backend = self.backend or _default_backend
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}")
        if backend == "sdpa":
            return self._forward_sdpa(x, attn_mask)
        if backend == "math":
            with sdpa_kernel(SDPBackend.MATH):
                return self._forward_sdpa(x, attn_mask)
        return self._forward_reference(x, attn_mask)

    def _forward_sdpa(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, L, hd)
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)  # (B, 1, L, L): broadcast over heads
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, L, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))

    def _forward_reference(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, L, D = x.shape
        mha_mask = None
        if attn_mask is not None:
            # nn.MultiheadAttention: bool True = NOT allowed; a 3-D mask is (B * heads, L, L).
            mha_mask = ~attn_mask
            if mha_mask.dim() == 3:
                mha_mask = mha_mask.repeat_interleave(self.heads, dim=0)
            elif mha_mask.dim() == 4:  # (B, heads, L, L) -> (B * heads, L, L), image-major as MHA expects
                mha_mask = mha_mask.flatten(0, 1)
        out, _ = F.multi_head_attention_forward(
            x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1),  # (L, B, D)
            D, self.heads, self.in_proj_weight, self.in_proj_bias, None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, training=self.training, need_weights=False,
            attn_mask=mha_mask,
        )
        return out.transpose(0, 1)


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP = c_fc -> GELU -> c_proj (ratio 4, METHOD.md s.2)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, backend: Optional[str] = None) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, backend)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", nn.GELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


def build_blocks(width: int, layers: int, heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    """A stack of blocks, held as a ModuleList so keys read `<owner>.transformer.<i>.*` like the release."""
    return nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    for block in blocks:
        x = block(x, attn_mask)
    return x
